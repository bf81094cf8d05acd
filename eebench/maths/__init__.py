"""The pure maths of early exiting, apart from the commands that use it: array operations over a
trace, no files written and no model run.

* ``sweep``: a policy's settings swept over a trace (metric, time%, exits), and the operating point a
  target picks (``eebench calibrate``'s maths; the command is eebench.pipeline.calibrate);
* ``fastsweep``: every threshold of a sweep at once, without a [settings × examples × layers] array;
* ``timing``: time% and speed-up, one definition for every report;
* ``flops``: analytic MACs / FLOPs per example at given exits."""

"""Training: strategies (losses over all exits + which parameters train per stage) and one loop."""

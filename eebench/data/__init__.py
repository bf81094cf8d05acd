"""Tasks, their examples from local files or the hub, and tokenized batches."""

from eebench.data.examples import Examples
from eebench.data.tasks import TASKS, TaskSpec, get_task

__all__ = ["Examples", "TASKS", "TaskSpec", "get_task"]

"""Jobs: a unit of work (index some sources, or query one image) with a status people can follow.

The package owns its state, the ``jobs`` and ``job_batches`` tables in the store's PostgreSQL
(:mod:`.table`: their migrations and all their SQL). The rest, one idea a module:

- :mod:`.job`: the records (:class:`Job`, :class:`Work`) and errors;
- :mod:`.parameters`: a job's parameters, checked before it is queued;
- :mod:`.submit`: create a job and hand it to a sender (a queue, or a runner here);
- :mod:`.steps`: planning, one batch, one query, and :func:`run` for a whole job in this process;
- :mod:`.lease`: who holds work, and the heartbeat that keeps its lease;
- :mod:`.sweeper`: work whose lease ran out is sent again, or given up past its attempts;
- :mod:`.runner`: the in-process runner of a server with no broker;
- :mod:`.results`: where a query job's ranking goes, and reading it back.

Nothing here knows about the queue: the CLI and the API pass the sender in.
"""

from .job import FINISHED, KINDS, Claim, Job, JobNotFoundError, NoResultError, Work
from .lease import Holder, new_token
from .parameters import index_parameters, query_parameters
from .results import RESULT_TYPES, read_result, result_stem
from .runner import Runner
from .steps import index_batch, plan_index, run, run_query
from .submit import submit
from .sweeper import Send, Sweeper, sweep
from .table import Jobs, Swept

__all__ = [
    "FINISHED", "KINDS", "RESULT_TYPES", "Claim", "Holder", "Job", "JobNotFoundError", "Jobs", "NoResultError",
    "Runner", "Send", "Sweeper", "Swept", "Work", "index_batch", "index_parameters", "new_token", "plan_index",
    "query_parameters", "read_result", "result_stem", "run", "run_query", "submit", "sweep",
]

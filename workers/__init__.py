"""Celery workers for landmark jobs: :mod:`workers.app` (the app, queues, routing) and
:mod:`workers.tasks` (the tasks, each a thin wrapper over a step of :mod:`landmark.jobs`)."""

"""The initial-gain study: its configuration (:mod:`~neurorate.studies.config`, embedded configs in
``configs/``), plan and resumable results store (:mod:`~neurorate.studies.runner`), executors
(:mod:`~neurorate.studies.executor`, :mod:`~neurorate.studies.worker`), claims
(:mod:`~neurorate.studies.claims`) and report (:mod:`~neurorate.studies.report`).

The entry point is the function :func:`neurorate.study` (defined in :mod:`~neurorate.studies.runner`)."""

"""The preprocessing stages. Each is a :class:`tokenmill.runner.Stage` plus a
one-call function that runs it with :func:`tokenmill.runner.run_stage`."""

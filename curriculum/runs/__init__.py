"""The machinery that runs the curriculum's jobs (docs/curriculum.md): ``processes`` (subprocess or in-process
calls of a script's ``main``), ``launchers`` (resumable training and scoring runs in their own folders),
``outputs`` (reading a run folder), ``cache`` (the run cache shared by drivers), ``state`` (the driver's state file),
``lock`` (one driver per work folder), ``steps`` (a driver's runs as recorded steps) and ``command_line`` (the
drivers' shared flags and checks)."""

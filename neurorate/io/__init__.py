"""What a run leaves behind and reads back: run directories and :class:`~neurorate.io.results.TrainResult`
(:mod:`~neurorate.io.results`), NIR export/import (:mod:`~neurorate.io.nir`) and plots
(:mod:`~neurorate.io.plots`)."""

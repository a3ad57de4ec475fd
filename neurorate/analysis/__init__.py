"""Analyses of trained and untrained networks: Lyapunov spectra (:mod:`~neurorate.analysis.lyapunov`),
local gradient flossing (:mod:`~neurorate.analysis.flossing`) and rich/lazy learning metrics
(:mod:`~neurorate.analysis.richlazy`)."""

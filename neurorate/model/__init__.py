"""The network itself: its parameters (:mod:`~neurorate.model.spec`), the equations of one step and their
tangent map (:mod:`~neurorate.model.dynamics`), the losses (:mod:`~neurorate.model.losses`) and the spiking
(LIF/ALIF) variant (:mod:`~neurorate.model.spiking`, :mod:`~neurorate.model.spiking_learning`)."""

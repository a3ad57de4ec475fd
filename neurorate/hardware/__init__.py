"""Neuromorphic precision: hardware profiles (:mod:`~neurorate.hardware.profiles`, TOML files in
``hardware_profiles/``) and the one quantizer that applies them (:mod:`~neurorate.hardware.quantize`)."""

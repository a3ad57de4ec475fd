"""Defaults shared by ``neurorate run`` and ``neurorate lyapunov`` (one place, so their help and behaviour agree).

ReLU rates without the torch-default input bias: with tanh, e-prop stays on Romo's 0.017 "no memory" plateau at
every gain and learning rate tried (docs/study.md); with these settings it leaves it at g >= 1.
"""

RUN_DEFAULTS = dict(task="romo", rule="eprop", gain=1.5, lr=1e-3, lr_sgd=0.05, iterations=1500, hidden=64, batch=32,
                    activation="relu", input_bias=False, seed=0, form="A")
"""The network and training of ``neurorate run`` with no options (docs/cli.md); ``neurorate lyapunov`` draws the
same network (task, gain, N, seed, form, activation, input bias) unless told otherwise."""

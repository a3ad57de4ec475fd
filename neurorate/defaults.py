"""The defaults of ``neurorate run``, ``neurorate lyapunov`` and :func:`neurorate.train`, in one place.

``neurorate run`` with no options (and the README's Python example, which passes the same values) trains e-prop on
Romo with N = 128 ReLU units without input bias at g = 1.5, Adam at lr 1.5e-4 for 3,000 iterations. These values
come from pilots of 12-20 seeds (docs/cli.md, "The default run"): decision accuracy >= 0.9 on 10 of seeds 0-11 with
the compiled CPU path that ``neurorate run`` uses (the seeds that miss had reached a best-so-far loss near 1e-3 and
then unlearned under the constant learning rate) in about 20 s on 2 cores. The previous default (N = 64,
lr 1e-3, 1,500 iterations) ended at chance on seed 0.
"""

RUN_DEFAULTS = dict(task="romo", rule="eprop", gain=1.5, lr=1.5e-4, lr_sgd=0.05, iterations=3000, hidden=128, batch=32,
                    activation="relu", input_bias=False, seed=0, form="A")
"""The network and training of ``neurorate run`` with no options (docs/cli.md); ``neurorate lyapunov`` draws the
same network (task, gain, N, seed, form, activation, input bias) unless told otherwise; :func:`neurorate.train`
takes its ``iterations`` from here and, without ``lr``, the backend's default learning rate of the optimizer, which
for the built-in backends is ``lr`` (Adam) or ``lr_sgd`` (SGD) from here."""

DEFAULT_LR = {"adam": RUN_DEFAULTS["lr"], "sgd": RUN_DEFAULTS["lr_sgd"]}
"""Default learning rate of each optimizer (the built-in backends declare these in their capabilities)."""

"""Bayes-optimal decision accuracy of a task: the accuracy of an ideal observer that knows the task's generative
model and sees the same inputs as the network (the ceiling no network can pass, in the sense of
:func:`neurorate.model.losses.accuracy`: the fraction of decision steps whose choice is right).

* Ring tasks (2AF, DMS; :mod:`neurorate.tasks.ring`) are a finite set of equally likely hypotheses (the trial
  variables, :meth:`hypotheses`) observed through Gaussian input noise of standard deviation ``sigma / sqrt(dt)``
  per step and channel. The ideal observer computes the posterior of every hypothesis from the noisy inputs of the
  whole trial (the noiseless inputs of each hypothesis are its templates), sums it per answer and picks the most
  probable answer; :func:`bayes_accuracy` estimates its accuracy by Monte Carlo over ``n_trials`` trials drawn as
  the task draws them. Closed forms for checking: 2AF at coherence ``c`` with ``n`` stimulus steps is
  ``Phi((c / 100) sqrt(n / 2) / s)``, averaged over the coherences (0.896 at the neurogym defaults: the noise caps
  it); DMS is ``a^2 + (1 - a)^2`` with ``a = Phi(sqrt(n / 2) / s)`` when sample and test both last ``n`` steps
  (1.0 at the defaults).
* Romo (:mod:`neurorate.tasks.romo`) has noiseless inputs and ``f1 != f2``: the larger frequency is always
  knowable once both were shown, so the Bayes-optimal accuracy is 1.
* Other tasks (neurogym environments) have no model here: None.

:func:`accuracy_criterion` turns it into a learning-speed criterion: chance plus a fraction of the distance from
chance to the Bayes-optimal accuracy (the study's iterations to criterion, docs/study.md).
"""

from __future__ import annotations

import math

import numpy as np


def bayes_accuracy(task, n_trials: int = 20_000, seed: int = 0) -> float | None:
    """The Bayes-optimal decision accuracy of ``task`` (see the module docstring): a Monte Carlo estimate over
    ``n_trials`` trials (standard error at most ``0.5 / sqrt(n_trials)``) for ring tasks, 1.0 for Romo, None for a
    task without a model here."""
    from neurorate.tasks.ring import RingTask
    from neurorate.tasks.romo import RomoTask

    if isinstance(task, RomoTask):
        return 1.0 if int(task.stimulus / task.dt + 1e-9) >= 1 else 0.5
    if isinstance(task, RingTask) and hasattr(task, "hypotheses"):
        return _ring_bayes_accuracy(task, int(n_trials), np.random.default_rng(seed))
    return None


def chance_accuracy(task) -> float | None:
    """The accuracy of guessing the most likely answer without looking at the inputs (0.5 for Romo, 2AF and DMS)."""
    from neurorate.tasks.ring import RingTask
    from neurorate.tasks.romo import RomoTask

    if isinstance(task, RomoTask):
        return 0.5
    if isinstance(task, RingTask) and hasattr(task, "hypotheses"):
        prior: dict[int, float] = {}
        for _, answer, p in task.hypotheses():
            prior[answer] = prior.get(answer, 0.0) + p
        return max(prior.values())
    return None


def accuracy_criterion(task, fraction: float = 0.9, n_trials: int = 20_000, seed: int = 0) -> float | None:
    """``chance + fraction * (bayes - chance)``: the accuracy a run must reach to count as having learned the task
    (None when the task has no Bayes-optimal accuracy here). ``fraction = 0.9`` on 2AF at the neurogym defaults is
    0.5 + 0.9 x 0.396 = 0.856."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    bayes, chance = bayes_accuracy(task, n_trials, seed), chance_accuracy(task)
    if bayes is None or chance is None:
        return None
    return chance + fraction * (bayes - chance)


def _ring_bayes_accuracy(task, n: int, rng: np.random.Generator) -> float:
    hyps = task.hypotheses()
    templates = np.stack([task.trials(*variables, None)[0][:, 0, :] for variables, _, _ in hyps])  # (H, L, C)
    answers = np.array([a for _, a, _ in hyps])
    log_prior = np.log(np.array([p for _, _, p in hyps]))
    variables = task.draw(rng, n)
    x, labels, _ = task.trials(*variables, rng if task.sigma > 0 else None)
    d0, _ = task.periods["decision"]
    truth = labels[d0]  # every decision step of a trial has the trial's answer
    flat = x.transpose(1, 0, 2).reshape(n, -1).astype(np.float64)  # (n, L * C)
    tmpl = templates.reshape(len(hyps), -1).astype(np.float64)  # (H, L * C)
    dist2 = (flat ** 2).sum(1)[:, None] - 2 * flat @ tmpl.T + (tmpl ** 2).sum(1)[None, :]  # (n, H)
    sd = task.sigma / math.sqrt(task.dt)
    if sd > 0:
        log_post = log_prior[None, :] - dist2 / (2 * sd ** 2)
    else:  # noiseless: the hypotheses whose templates match exactly
        log_post = np.where(dist2 <= dist2.min(1, keepdims=True) + 1e-9, log_prior[None, :], -np.inf)
    log_post -= log_post.max(1, keepdims=True)
    post = np.exp(log_post)
    choices = np.unique(answers)
    by_answer = np.stack([post[:, answers == a].sum(1) for a in choices], axis=1)  # (n, answers)
    best = by_answer.max(1, keepdims=True)
    tied = by_answer >= best * (1 - 1e-12)  # an exact tie is a guess among the tied answers
    correct = (tied & (choices[None, :] == truth[:, None])).sum(1) / tied.sum(1)
    return float(correct.mean())

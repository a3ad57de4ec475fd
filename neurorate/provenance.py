"""Provenance: package versions, git revision, machine, and the citations of the methods used."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

_PACKAGES = ("neurorate", "torch", "numpy", "neurogym", "lava-nc", "snntorch", "norse", "nir", "nirtorch", "pydantic")

CITATIONS = {
    "paper": """@article{zhang2024initial,
  title={How Initial Connectivity Shapes Biologically Plausible Learning in Recurrent Neural Networks},
  author={Zhang, Xinyue and Liu, Weixuan and Liu, Yuhan Helena}, journal={arXiv:2410.11164}, year={2024}}""",
    "eprop": """@article{bellec2020solution,
  title={A solution to the learning dilemma for recurrent networks of spiking neurons},
  author={Bellec, Guillaume and Scherr, Franz and Subramoney, Anand and Hajek, Elias and Salaj, Darjan and Legenstein, Robert and Maass, Wolfgang},
  journal={Nature Communications}, volume={11}, pages={3625}, year={2020}}""",
    "rflo": """@article{murray2019local,
  title={Local online learning in recurrent networks with random feedback},
  author={Murray, James M}, journal={eLife}, volume={8}, pages={e43299}, year={2019}}""",
    "flossing": """@inproceedings{engelken2023gradient,
  title={Gradient Flossing: Improving Gradient Descent through Dynamic Control of Jacobians},
  author={Engelken, Rainer}, booktitle={Advances in Neural Information Processing Systems}, year={2023}}""",
    "lyapunov": """@article{vogt2022lyapunov,
  title={On Lyapunov Exponents for RNNs: Understanding Information Propagation Using Dynamical Systems Tools},
  author={Vogt, Ryan and Puelma Touzel, Maximilian and Shlizerman, Eli and Lajoie, Guillaume},
  journal={Frontiers in Applied Mathematics and Statistics}, volume={8}, year={2022}}""",
    "romo": """@inproceedings{schuessler2020interplay,
  title={The interplay between randomness and structure during learning in RNNs},
  author={Schuessler, Friedrich and Mastrogiuseppe, Francesca and Dubreuil, Alexis and Ostojic, Srdjan and Barak, Omri},
  booktitle={Advances in Neural Information Processing Systems}, year={2020}}""",
    "neurogym": """@article{neurogym2022,
  title={NeuroGym: An open resource for developing and sharing neuroscience tasks},
  author={{Molano-Maz{\\'o}n}, Manuel and others}, journal={PsyArXiv}, year={2022}}""",
    "lava": """@misc{lava2021,
  title={Lava: A Software Framework for Neuromorphic Computing}, author={{Intel Neuromorphic Computing Lab}},
  howpublished={\\url{https://github.com/lava-nc/lava}}, year={2021}}""",
    "richlazy": """@inproceedings{liu2024connectivity,
  title={How connectivity structure shapes rich and lazy learning in neural circuits},
  author={Liu, Yuhan Helena and Baratin, Aristide and Cornford, Jonathan and Mihalas, Stefan and Shea-Brown, Eric and Lajoie, Guillaume},
  booktitle={International Conference on Learning Representations}, year={2024}}""",
    "rtrl": """@article{williams1989learning,
  title={A learning algorithm for continually running fully recurrent neural networks},
  author={Williams, Ronald J and Zipser, David}, journal={Neural Computation}, volume={1}, number={2},
  pages={270--280}, year={1989}}""",
    "snap": """@inproceedings{menick2021practical,
  title={Practical Real Time Recurrent Learning with a Sparse Approximation},
  author={Menick, Jacob and Elsen, Erich and Evci, Utku and Osindero, Simon and Simonyan, Karen and Graves, Alex},
  booktitle={International Conference on Learning Representations}, year={2021}}""",
    "uoro": """@inproceedings{tallec2018unbiased,
  title={Unbiased Online Recurrent Optimization}, author={Tallec, Corentin and Ollivier, Yann},
  booktitle={International Conference on Learning Representations}, year={2018}}""",
    "kfrtrl": """@inproceedings{mujika2018approximating,
  title={Approximating Real-Time Recurrent Learning with Random Kronecker Factors},
  author={Mujika, Asier and Meier, Florian and Steger, Angelika},
  booktitle={Advances in Neural Information Processing Systems}, volume={31}, year={2018}}""",
    "unified": """@article{marschall2020unified,
  title={A unified framework of online learning algorithms for training recurrent neural networks},
  author={Marschall, Owen and Cho, Kyunghyun and Savin, Cristina}, journal={Journal of Machine Learning Research},
  volume={21}, number={135}, pages={1--34}, year={2020}}""",
}


def citation(*methods: str) -> str:
    """BibTeX of the paper reproduced and of the given methods (all methods if none is named)."""
    keys = methods or tuple(CITATIONS)
    unknown = [k for k in keys if k not in CITATIONS]
    if unknown:
        from neurorate.errors import NeurorateError

        raise NeurorateError(f"no citation for {', '.join(unknown)}; known: {', '.join(CITATIONS)}")
    return "\n\n".join(CITATIONS[k] for k in keys)


def versions() -> dict[str, str | None]:
    """Installed versions of neurorate's dependencies (None when not installed)."""
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision() -> str | None:
    """The git revision of the neurorate source tree (with ``-dirty`` if modified), or None."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("-dirty" if dirty else "")) if rev else None


def environment() -> dict:
    """Versions, git revision, Python and machine."""
    return {"versions": versions(), "git_revision": git_revision(), "python": platform.python_version(),
            "platform": platform.platform(), "processor": platform.processor() or platform.machine()}

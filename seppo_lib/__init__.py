"""seppo: SePPO preference optimization for diffusion models, as a Kubeflow pipeline."""

__version__ = "0.1.0"

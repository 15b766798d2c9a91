"""Experiments: what composes training and evaluation into results. The pipeline (train -> evaluate the best
checkpoint on the held-out test split -> report -> trackers) and the benchmark of several models; each is a run
directory or a folder of them."""

from medclass.experiments.pipeline import ExperimentResult, resume_experiment, run_experiment

__all__ = ["ExperimentResult", "resume_experiment", "run_experiment"]

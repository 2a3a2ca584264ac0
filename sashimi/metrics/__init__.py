"""Metrics: exact likelihood of token models, and sample quality the way the SaShiMi paper measures it
(the SC09 evaluation classifier, FID / IS / mIS / AM / NDB, selection by likelihood)."""
from sashimi.metrics.likelihood import LikelihoodTotals, bits_per_sample, token_nll
from sashimi.metrics.quality import (am_score, frechet_distance, inception_score, modified_inception_score, ndb,
                                     probs_from_logits)

__all__ = ["LikelihoodTotals", "am_score", "bits_per_sample", "frechet_distance", "inception_score",
           "load_classifier", "modified_inception_score", "ndb", "probs_from_logits", "token_nll"]


def __getattr__(name):  # the classifier needs torch.nn; load it on first use only
    if name == "load_classifier":
        from sashimi.metrics.classifier import load_classifier

        return load_classifier
    raise AttributeError(name)

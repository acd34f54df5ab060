"""The Entire Space Multi-task Model's output: pCTCVR = pCTR × pCVR, as a logit.

Ma, X., Zhao, L., Huang, G., Wang, Z., Hu, Z., Zhu, X., Gai, K. (2018). "Entire Space Multi-Task
Model: An Effective Approach for Estimating Post-Click Conversion Rate". SIGIR 2018, 1137-1140.

The towers of post-click tasks predict pCVR = P(task | click, x); the published output is
pCTCVR = P(click, task | x) = pCTR × pCVR, learned over all exposures (labels: click, and click ∧ task),
so the post-click towers are trained on the entire space of exposures, not only on clicks. Tandem
applies it on top of any backbone (:class:`~mtl_model.learn.networks.base.MultiTaskNet`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

ESMM_PARENT = "click"  # under ESMM every other task is modelled as P(task | click) × P(click)
LOG_P_MAX = -1e-6  # log-probabilities are clipped below 0 so logit(p) stays finite


def default_esmm(architecture: str, tasks: Sequence[str]) -> bool:
    """ESMM on by default for MMoE / PLE when there is a click task and at least one post-click task."""
    return architecture in ("mmoe", "ple") and ESMM_PARENT in tasks and len(tasks) > 1


def product_logit(logit_a: torch.Tensor, logit_b: torch.Tensor) -> torch.Tensor:
    """logit(sigmoid(a) · sigmoid(b)), computed in log space: [B], [B] → [B].

    log p = logsigmoid(a) + logsigmoid(b) (clipped to ≤ ``LOG_P_MAX``); logit = log p − log(1 − p) with
    log(1 − p) = log1mexp(log p) evaluated stably on both sides of −ln 2.
    """
    log_p = (F.logsigmoid(logit_a) + F.logsigmoid(logit_b)).clamp(max=LOG_P_MAX)
    log_1mp = torch.where(
        log_p < -math.log(2.0), torch.log1p(-torch.exp(log_p)), torch.log(-torch.expm1(log_p))
    )
    return log_p - log_1mp

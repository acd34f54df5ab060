"""Joint multi-task models, one module per paper: shared-bottom (Caruana 1997), MMoE (Ma et al., KDD
2018), CGC / PLE (Tang et al., RecSys 2020), the ESMM output (Ma et al., SIGIR 2018) on top of any
backbone, and scene-aware gates and towers.

* :mod:`.embedding`, :mod:`.experts`: the stacked embedding table and the batched expert, gate and
  mixture kernels the papers share; :mod:`.towers`: task and scene towers;
* :mod:`.base`: :class:`MultiTaskNet` (embedding → backbone → towers → ESMM) and the saved-parameter
  layout; :mod:`.shared_bottom`, :mod:`.mmoe`, :mod:`.ple`, :mod:`.esmm`: the papers;
* :mod:`.build`: :func:`build_model`, :func:`split_parameters`, :func:`predict_proba`.

docs/models.md describes each architecture, its shapes and the settings that select it.
"""

from mtl_model.learn.networks.base import PARAMETER_LAYOUT, MultiTaskNet
from mtl_model.learn.networks.build import ARCHITECTURES, build_model, predict_proba, split_parameters
from mtl_model.learn.networks.embedding import FeatureEmbedding
from mtl_model.learn.networks.esmm import ESMM_PARENT, LOG_P_MAX, default_esmm, product_logit
from mtl_model.learn.networks.experts import ExpertBank, gate_logits, mixture, mlp, run_experts, softmax_gates
from mtl_model.learn.networks.mmoe import MMoE
from mtl_model.learn.networks.ple import CGC, PLE
from mtl_model.learn.networks.shared_bottom import SharedBottom
from mtl_model.learn.networks.towers import SceneTower, TaskTowers

__all__ = [
    "ARCHITECTURES",
    "CGC",
    "ESMM_PARENT",
    "LOG_P_MAX",
    "MMoE",
    "PARAMETER_LAYOUT",
    "PLE",
    "ExpertBank",
    "FeatureEmbedding",
    "MultiTaskNet",
    "SceneTower",
    "SharedBottom",
    "TaskTowers",
    "build_model",
    "default_esmm",
    "gate_logits",
    "mixture",
    "mlp",
    "predict_proba",
    "product_logit",
    "run_experts",
    "softmax_gates",
    "split_parameters",
]

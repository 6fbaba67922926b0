"""Neural networks of metadt (``nn.Module`` only; no files, no environments).

- :class:`ContextEncoder` (``context_encoder``): GRU over the h transitions before
  a step -> task representation z;
- :class:`RewardDecoder`, :class:`TransitionDecoder` (``decoders``);
- :class:`WorldModel` (``world_model``): encoder + decoders + normalization stats;
- :class:`GPT` (``transformer``): causal transformer, attention through
  :func:`metadt.kernels.attention`;
- :class:`MetaDT` (``meta_dt``): the one conditioned policy of Meta-DT and every
  baseline.
"""
from metadt.models.context_encoder import ContextEncoder
from metadt.models.decoders import RewardDecoder, TransitionDecoder
from metadt.models.meta_dt import MetaDT
from metadt.models.transformer import GPT, attend
from metadt.models.world_model import WorldModel

__all__ = ["ContextEncoder", "GPT", "MetaDT", "RewardDecoder", "TransitionDecoder",
           "WorldModel", "attend"]

"""`pretrain`: self-supervised training on the user's own unlabeled data, saved as a backbone folder that
`fit --backbone FOLDER` takes. One module per objective, each naming the paper it follows, registered with
`@register_objective` (base.py):

- autoencoder.py  reconstruct the image from its embedding (denoising variant with `denoise=True`)
- masked.py       masked image modelling (SimMIM-style)
- contrastive.py  SimCLR: two augmented views, NT-Xent, projection head
- mlm.py          continued masked-language-model pretraining of a Transformers encoder
- audio_masked.py, audio_contrastive.py  the same two ideas on log-mel spectrograms (audio_base.py: crops, augmentations)

runner.py holds `pretrain` itself; trainer.py the Lightning loop they share.
"""

from .base import OBJECTIVES, Objective, ObjectiveOptions, PretrainOptions, register_objective
from .runner import Pretrained, pretrain

__all__ = ["OBJECTIVES", "Objective", "ObjectiveOptions", "PretrainOptions", "Pretrained", "pretrain",
           "register_objective"]

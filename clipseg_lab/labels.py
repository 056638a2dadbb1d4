"""What label values mean everywhere in the package: masks, losses, metrics and figures read this one constant."""

from __future__ import annotations

# Pixels with this label are left out of losses and metrics (boundary bands, void, unlabelled), as in
# torch's `cross_entropy(ignore_index=...)` and the datasets' own conventions (Pet trimaps, Cityscapes train ids).
IGNORE_INDEX = 255

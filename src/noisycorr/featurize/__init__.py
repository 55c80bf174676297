"""From images and captions to precomp features: sources, image encoders, the resumable writer.

- :mod:`noisycorr.featurize.sources`: tables (CSV, TSV, JSON lines, parquet) and webdataset shards,
  record by record, with the reason each unusable row is skipped.
- :mod:`noisycorr.featurize.encoders`: the image-encoder interface; EfficientNet-Lite0 (default, offline,
  :mod:`noisycorr.featurize.efficientnet`), timm and open_clip models.
- :mod:`noisycorr.featurize.writer`: :func:`featurize`, chunked and resumable, writing the precomp layout.
- :mod:`noisycorr.featurize.rewrite`: the source written again without some rows, in its own format.
"""

from noisycorr.featurize.encoders import ImageEncoder, create_encoder, list_encoders
from noisycorr.featurize.sources import FORMATS, Source, SourceRow, read_source
from noisycorr.featurize.writer import FeaturizeResult, featurize, read_manifest

__all__ = [
    "FORMATS",
    "FeaturizeResult",
    "ImageEncoder",
    "Source",
    "SourceRow",
    "create_encoder",
    "featurize",
    "list_encoders",
    "read_manifest",
    "read_source",
]

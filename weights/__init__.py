"""The official FCN weights: registry records, published metrics, cache, verified downloads.

    >>> import weights
    >>> weights.get("voc-fcn8s").url
    'http://dl.caffe.berkeleyvision.org/fcn8s-heavy-pascal.caffemodel'
    >>> path = weights.fetch("voc-fcn8s")        # downloads once, verified, into the cache
    >>> net = weights.load("voc-fcn8s")          # fetch + build (weights.load_model)

Nothing downloads unasked from the commands: ``weights.obtain`` is the one rule they follow
(``--download`` fetches; otherwise a terminal is asked, anything else gets one error line). The
Python API downloads by default, as ``torch.hub`` does: ``weights.load(name, download=False)``
never touches the network.
"""

import converters._startup  # noqa: F401 - first: a Ctrl-C while torch loads under `python -m` is quiet

from . import published
from .api import (
    NotDownloadedError,
    NotReleasedError,
    Verification,
    cached_path,
    fetch,
    is_url,
    load,
    obtain,
    verify,
)
from .cache import cache_dir
from .download import ChecksumMismatch, DownloadError, RetryPolicy, download
from .models import LoadedModel, ModelError, load_model
from .registry import (
    InputSpec,
    OutputSpec,
    UnknownWeightsError,
    WeightsRecord,
    get,
    names,
    records,
)

__all__ = [
    "ChecksumMismatch",
    "DownloadError",
    "InputSpec",
    "NotDownloadedError",
    "NotReleasedError",
    "OutputSpec",
    "RetryPolicy",
    "UnknownWeightsError",
    "Verification",
    "WeightsRecord",
    "cache_dir",
    "cached_path",
    "download",
    "fetch",
    "get",
    "is_url",
    "LoadedModel",
    "ModelError",
    "load",
    "load_model",
    "names",
    "obtain",
    "published",
    "records",
    "verify",
]

"""Caffe's file-reading data layers, without Caffe: ``HDF5Data`` and ``ImageData``.

Each source gives one batch per call (``{top: float32 array}``), in Caffe's order:

- ``HDF5Data`` (``hdf5_data_layer.cpp``): ``source`` lists ``.h5`` files (whitespace-separated);
  each top is the dataset of its name; rows are read in order, ``batch_size`` at a time, moving to
  the next file at the end of one and back to the first after the last.
- ``ImageData`` (``image_data_layer.cpp`` + ``data_transformer.cpp``): ``source`` lists
  ``path label`` lines (the label after the last space), images under ``root_folder``, decoded as
  BGR (or gray with ``is_color: false``), resized to ``new_height`` x ``new_width`` (bilinear, as
  OpenCV's ``INTER_LINEAR``, rounded to 8 bits), then ``transform_param``: crop (random in TRAIN,
  centred in TEST), mirror (random, in TEST too: Caffe's ``DataTransformer`` draws it in either
  phase), minus ``mean_value`` (or ``mean_file``), times
  ``scale``. Tops: data ``N x C x H x W`` and label ``N``.

Caffe's random stream cannot be reproduced: ``shuffle``, ``rand_skip``, random crops and mirrors use
a seeded numpy generator (``random_seed`` of the solver when set), with Caffe's distributions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..caffe.formats import blob_array, read_binary_net, refuse_special_file
from ..caffe.message import Message
from ..caffe.netdef import layer_type
from ..errors import CaffeFormatError, SolverError

#: Copies of a decoded image the reader holds at once (uint8 pixels, float32 planes, a resize).
_IMAGE_COPIES = 3


def _memory() -> int | None:
    from ..graph.builder import memory_limit

    return memory_limit()


def _regular(path: Path, where: str) -> None:
    """SolverError for a FIFO, socket or device named where a data file belongs (opening a FIFO
    waits for a writer forever)."""
    try:
        refuse_special_file(path)
    except CaffeFormatError as exc:
        raise SolverError(f"{where}: {exc}") from None


def check_image_memory(image, path: Path, where: str, resize: tuple[int, int] | None = None) -> None:
    """SolverError when decoding the opened (not yet decoded) PIL ``image`` (and resizing it to
    ``resize`` = (height, width)) needs more memory than this machine has: checked from the header,
    before any pixel is allocated."""
    width, height = image.size
    sizes = [(height, width)] + ([resize] if resize else [])
    need = max(h * w for h, w in sizes) * 3 * 4 * _IMAGE_COPIES
    limit = _memory()
    if limit is None or need <= limit:
        return
    if resize:
        raise SolverError(
            f"{where}: image {path} ({width} x {height}, resized to {resize[1]} x {resize[0]}) needs "
            f"{need / 2**30:.1f} GiB to read, more than the {limit / 2**30:.1f} GiB of memory here"
        )
    raise SolverError(
        f"{where}: image {path} ({width} x {height}) needs {need / 2**30:.1f} GiB to read, more than the "
        f"{limit / 2**30:.1f} GiB of memory here: make it smaller"
    )


def check_image_file(path: Path, where: str) -> tuple[int, int]:
    """SolverError (one line) for an image file that is not a regular file (a FIFO would block the
    reader), that PIL cannot open, that PIL calls a decompression bomb, or whose declared size needs
    more memory than this machine has; only the header is read. Returns its (width, height)."""
    from PIL import Image

    _regular(path, where)
    try:
        with Image.open(path) as im:
            check_image_memory(im, path, where)
            return im.size
    except SolverError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise SolverError(f"{where}: cannot read image {path}: {' '.join(str(exc).split())}") from None


Batch = dict[str, np.ndarray]
SUPPORTED = ("HDF5Data", "ImageData")


def _source_text(source: Path, where: str) -> str:
    """A data layer's source list as text: one line naming the list when it cannot be read as such
    (a FIFO, not UTF-8, unreadable)."""
    _regular(source, where)
    try:
        return source.read_text()
    except UnicodeDecodeError as exc:
        raise SolverError(f"{where}: source {source} is not text (byte {exc.start} is not UTF-8)") from None
    except OSError as exc:
        raise SolverError(f"{where}: cannot read source {source}: {exc.strerror or exc}") from None


def _find(name: str, base: Path | None) -> Path:
    """A file named in a net: as written (Caffe reads it from the working directory), else relative
    to ``base`` (the folder of the file that names it)."""
    path = Path(name)
    if path.exists() or path.is_absolute() or base is None:
        return path
    return base / path


#: Data of an HDF5Data source kept in memory across its files' cycles (Caffe reads a file again
#: each time its turn comes; the values are the same, the time is not).
CACHED_HDF5_BYTES = 256 * 2**20


class HDF5Source:
    """Batches as Caffe's ``HDF5Data`` layer reads them."""

    def __init__(self, layer: Message, base: Path | None = None, seed: int = 0) -> None:
        p = layer.get("hdf5_data_param")
        self.where = f"layer '{layer.get('name')}' (HDF5Data)"
        self.tops = [str(t) for t in layer.getall("top")]
        self.batch_size = int(p.get("batch_size"))
        if self.batch_size < 1:
            raise SolverError(f"{self.where}: batch_size must be at least 1")
        self.shuffle = bool(p.get("shuffle"))
        self.rng = np.random.RandomState(seed)
        source = _find(str(p.get("source")), base)
        if not source.is_file():
            raise SolverError(f"{self.where}: source {str(p.get('source'))!r} not found")
        self.files = [_find(name, source.parent) for name in _source_text(source, self.where).split()]
        if not self.files:
            raise SolverError(f"{self.where}: source '{source}' lists no HDF5 files")
        self.file_order = list(range(len(self.files)))
        if self.shuffle:
            self.rng.shuffle(self.file_order)
        self.current_file = 0
        self.row_shapes: dict[str, tuple[int, ...]] | None = None
        self._cache: dict[Path, dict[str, np.ndarray]] = {}
        self._cached_bytes = 0
        self._load(self.files[self.file_order[0]])

    def _load(self, path: Path) -> None:
        cached = self._cache.get(path)
        if cached is not None:  # a source of small files cycles through them: read each once
            self.data = cached
        else:
            self._read(path)
            size = sum(v.nbytes for v in self.data.values())
            if self._cached_bytes + size <= CACHED_HDF5_BYTES:
                self._cache[path] = self.data
                self._cached_bytes += size
        self._check_rows(path)

    def _read(self, path: Path) -> None:
        import h5py

        _regular(path, self.where)
        try:
            with h5py.File(path, "r") as f:
                missing = [t for t in self.tops if t not in f or not isinstance(f[t], h5py.Dataset)]
                if missing:
                    raise SolverError(f"{self.where}: {path} has no dataset '{missing[0]}'")
                need = sum(4 * int(np.prod(f[t].shape, dtype=np.int64)) for t in self.tops)
                limit = _memory()
                if limit is not None and need > limit:  # checked before anything is read
                    raise SolverError(
                        f"{self.where}: {path} declares {need / 2**30:.1f} GiB of data, more than the "
                        f"{limit / 2**30:.1f} GiB of memory here: split it into smaller files"
                    )
                self.data = {t: np.asarray(f[t][()], dtype=np.float32) for t in self.tops}
        except SolverError:
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:  # h5py's errors
            raise SolverError(f"{self.where}: cannot read {path}: {' '.join(str(exc).split())}") from None

    def _check_rows(self, path: Path) -> None:
        rows = {t: v.shape[0] if v.ndim else 0 for t, v in self.data.items()}
        if len(set(rows.values())) != 1 or not next(iter(rows.values())):
            raise SolverError(f"{self.where}: {path}: datasets have different or no rows {rows}")
        first = self.row_shapes
        row_shapes = {t: v.shape[1:] for t, v in self.data.items()}
        if first is not None and row_shapes != first:  # the batch's shape comes from the first file
            top = next(t for t in self.tops if row_shapes[t] != first[t])
            raise SolverError(
                f"{self.where}: {path}: rows of '{top}' are {list(row_shapes[top])}, those of the first "
                f"file {list(first[top])}: every file of the source must hold rows of one shape"
            )
        self.row_shapes = row_shapes
        self.rows = next(iter(rows.values()))
        self.order = np.arange(self.rows)
        if self.shuffle:
            self.rng.shuffle(self.order)
        self.current_row = 0

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Each top's batch shape (as Caffe's ``Reshape`` gives it, without reading a batch)."""
        return {t: (self.batch_size, *v.shape[1:]) for t, v in self.data.items()}

    def __call__(self) -> Batch:
        out = {t: np.empty((self.batch_size, *v.shape[1:]), np.float32) for t, v in self.data.items()}
        i = 0
        while i < self.batch_size:  # Caffe's row by row, a run of rows of one file at a time
            if self.current_row == self.rows:
                if len(self.files) > 1:
                    self.current_file += 1
                    if self.current_file == len(self.files):
                        self.current_file = 0
                        if self.shuffle:
                            self.rng.shuffle(self.file_order)
                    self._load(self.files[self.file_order[self.current_file]])
                self.current_row = 0
                if self.shuffle:
                    self.rng.shuffle(self.order)
            k = min(self.batch_size - i, self.rows - self.current_row)
            rows = self.order[self.current_row : self.current_row + k]
            for t in self.tops:
                out[t][i : i + k] = self.data[t][rows]
            self.current_row += k
            i += k
        return out


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``H x W x C`` uint8 resized like OpenCV's ``INTER_LINEAR`` (half-pixel centres, no
    antialiasing), rounded back to uint8."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]
    y = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    return y[0].permute(1, 2, 0).round().clamp(0, 255).numpy().astype(np.uint8)


def _mean(transform: Message, channels: int, where: str, base: Path | None) -> np.ndarray | float:
    values = [float(v) for v in transform.getall("mean_value")]
    if "mean_file" in transform and values:
        raise SolverError(f"{where}: give mean_file or mean_value, not both")
    if "mean_file" in transform:
        path = _find(str(transform.get("mean_file")), base)
        return blob_array(read_binary_net(path, "BlobProto"), path, "mean_file")[0]
    if values and len(values) not in (1, channels):
        raise SolverError(f"{where}: {len(values)} mean_value entries for {channels} channels")
    if not values:
        return 0.0
    return np.asarray(values, np.float32).reshape(-1, 1, 1) if len(values) > 1 else values[0]


class ImageSource:
    """Batches as Caffe's ``ImageData`` layer makes them (see the module docstring)."""

    def __init__(self, layer: Message, base: Path | None = None, seed: int = 0, phase: str = "TRAIN") -> None:
        p = layer.get("image_data_param")
        self.where = f"layer '{layer.get('name')}' (ImageData)"
        self.tops = [str(t) for t in layer.getall("top")]
        self.transform = layer.get("transform_param")
        self.phase = phase
        self.batch_size = int(p.get("batch_size"))
        self.new_height, self.new_width = int(p.get("new_height")), int(p.get("new_width"))
        if (self.new_height > 0) != (self.new_width > 0):
            raise SolverError(f"{self.where}: give both new_height and new_width, or neither")
        self.color = bool(p.get("is_color"))
        self.shuffle = bool(p.get("shuffle"))
        self.root = str(p.get("root_folder"))
        self.rng = np.random.RandomState(seed)
        self.base = base
        self._means: dict[int, np.ndarray | float] = {}
        source = _find(str(p.get("source")), base)
        if not source.is_file():
            raise SolverError(f"{self.where}: source {str(p.get('source'))!r} not found")
        self.lines: list[tuple[str, int]] = []
        for number, line in enumerate(_source_text(source, self.where).splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            name, _, label = line.rpartition(" ")
            if not name:
                raise SolverError(f"{source}: line {number} is not 'path label'")
            try:
                self.lines.append((name, int(label)))
            except ValueError:
                raise SolverError(f"{source}: line {number}: label '{label}' is not an integer") from None
        if not self.lines:
            raise SolverError(f"{self.where}: source '{source}' lists no images")
        self.source_folder = source.parent
        if self.shuffle:
            self.rng.shuffle(self.lines)
        self.position = 0
        skip = int(p.get("rand_skip"))
        if skip:
            self.position = int(self.rng.randint(skip)) % len(self.lines)
        first = self._transform(self._read(self.lines[self.position][0]), random=False)
        self._shape = first.shape

    def _read(self, name: str) -> np.ndarray:
        from PIL import Image

        path = Path(self.root + name) if self.root else _find(name, self.source_folder)
        _regular(path, self.where)
        resize = (self.new_height, self.new_width) if self.new_height > 0 else None
        try:
            with Image.open(path) as im:
                check_image_memory(im, path, self.where, resize)  # before the pixels are decoded
                image = np.asarray(im.convert("RGB" if self.color else "L"))
        except SolverError:
            raise
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise SolverError(
                f"{self.where}: cannot read image {path}: {' '.join(str(exc).split())}"
            ) from None
        image = image[:, :, ::-1] if self.color else image[:, :, None]  # OpenCV's BGR
        if self.new_height > 0:
            image = resize_bilinear(np.ascontiguousarray(image), self.new_height, self.new_width)
        return np.ascontiguousarray(image)

    def _transform(self, image: np.ndarray, random: bool = True) -> np.ndarray:
        t = self.transform
        crop, scale = int(t.get("crop_size")), float(np.float32(t.get("scale")))
        height, width, channels = image.shape
        x = image.transpose(2, 0, 1).astype(np.float32)
        mean = self._means.get(channels)
        if mean is None:  # (read once: a mean_file is a file)
            mean = self._means[channels] = _mean(t, channels, self.where, self.source_folder)
        if isinstance(mean, np.ndarray) and "mean_file" in t and mean.shape != x.shape:
            raise SolverError(  # (Caffe's DataTransformer CHECKs the mean's channels, height and width)
                f"{self.where}: mean_file {str(t.get('mean_file'))!r} is {' x '.join(map(str, mean.shape))}, "
                f"the image {' x '.join(map(str, x.shape))} (channels x height x width, before the crop): "
                "they must be equal"
            )
        x = x - mean
        if crop:
            if crop > height or crop > width:
                raise SolverError(f"{self.where}: crop_size {crop} exceeds the image size {height}x{width}")
            if self.phase == "TRAIN" and random:
                h_off = int(self.rng.randint(height - crop + 1))
                w_off = int(self.rng.randint(width - crop + 1))
            else:
                h_off, w_off = (height - crop) // 2, (width - crop) // 2
            x = x[:, h_off : h_off + crop, w_off : w_off + crop]
        if bool(t.get("mirror")) and random and self.rng.randint(2):  # (either phase, as Caffe's)
            x = x[:, :, ::-1]
        return np.ascontiguousarray(x * np.float32(scale), dtype=np.float32)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The tops' batch shapes."""
        shapes = {self.tops[0]: (self.batch_size, *self._shape)}
        if len(self.tops) > 1:
            shapes[self.tops[1]] = (self.batch_size,)
        return shapes

    def __call__(self) -> Batch:
        images, labels = [], []
        for _ in range(self.batch_size):
            name, label = self.lines[self.position]
            x = self._transform(self._read(name))
            if x.shape != self._shape:
                raise SolverError(
                    f"{self.where}: image {name} gives {list(x.shape)}, the batch holds {list(self._shape)}: "
                    "set new_height/new_width or crop_size"
                )
            images.append(x)
            labels.append(label)
            self.position += 1
            if self.position >= len(self.lines):
                self.position = 0
                if self.shuffle:
                    self.rng.shuffle(self.lines)
        out = {self.tops[0]: np.stack(images)}
        if len(self.tops) > 1:
            out[self.tops[1]] = np.asarray(labels, np.float32)
        return out


def data_sources(
    layers: list[Message], base: Path | None = None, seed: int = 0, phase: str = "TRAIN"
) -> list[Callable[[], Batch]]:
    """A source per data layer of ``layers`` (HDF5Data or ImageData); any other data layer is a
    :class:`SolverError` saying to use the Python API."""
    from ..caffe.traits import is_data_layer

    sources: list[Callable[[], Batch]] = []
    for layer in layers:
        kind = layer_type(layer)
        if not is_data_layer(kind) or layer.getall("bottom"):
            continue
        if kind == "HDF5Data":
            sources.append(HDF5Source(layer, base, seed))
        elif kind == "ImageData":
            sources.append(ImageSource(layer, base, seed, phase))
        else:
            raise SolverError(
                f"layer '{layer.get('name')}' ({kind}): the command line reads only HDF5Data and ImageData "
                "layers; use the Python API: converters.load_solver(...).step(feeds) with your data source"
            )
    if not sources:
        raise SolverError("the train net has no data layer: use the Python API with your data source")
    return sources

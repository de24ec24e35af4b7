"""Reading and writing Caffe files: binary ``.caffemodel``, ``.caffemodel.h5`` and ``.prototxt``.

Formats are recognised by content, never by file extension.
"""

from __future__ import annotations

import mmap
import os
import stat
import threading
from collections.abc import Callable, Iterable
from typing import Any, Literal

import numpy as np

from .. import spans
from ..atomic import atomic_write
from ..errors import CaffeFormatError
from .binary import decode_message, encode_chunks, write_chunks
from .hdf5 import HDF5_SIGNATURE, read_hdf5_layers, read_hdf5_weights, write_hdf5_weights
from .message import Message
from .text import format_message, parse_text

PathLike = str | os.PathLike[str]
Format = Literal["hdf5", "binary", "text"]
_TEXT_CONTROL = frozenset(range(32)) - {9, 10, 11, 12, 13}
_SNIFF_BYTES = 65536
MAX_BLOB_AXES = 32  # Caffe's kMaxBlobAxes (blob.hpp)
_INT_MAX = (1 << 31) - 1  # Caffe's blobs count their values and dimensions in int


def refuse_special_file(path: PathLike) -> None:
    """:class:`CaffeFormatError` for a path that exists but is not a regular file (a FIFO, a socket,
    a device), before it is opened: opening a FIFO would wait for a writer forever."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return  # missing or unnamable: open() says so
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"))  # fmt: skip
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    raise CaffeFormatError(f"is {kind}, not a file: give the path of a file", path)


def sniff_format(path: PathLike) -> Format:
    """``"hdf5"``, ``"binary"`` (protobuf wire format) or ``"text"`` (prototxt), from the bytes."""
    refuse_special_file(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError as exc:
        raise CaffeFormatError(exc.strerror or str(exc), path) from None
    if not head:
        raise CaffeFormatError("file is empty", path)
    if head.startswith(HDF5_SIGNATURE):
        return "hdf5"
    if any(byte in _TEXT_CONTROL for byte in head):
        return "binary"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of a partial sample is still text.
        cut_character = exc.reason == "unexpected end of data" and exc.start >= len(head) - 3
        if not (len(head) == _SNIFF_BYTES and cut_character):
            return "binary"
    return "text"


def _map_file(path: PathLike) -> memoryview:
    """A private, writable, lazily loaded map of the whole file (read into memory where the file
    system cannot map it)."""
    refuse_special_file(path)
    try:
        with open(path, "rb") as handle:
            return _map_handle(handle, path)
    except OSError as exc:
        raise CaffeFormatError(exc.strerror or str(exc), path) from None


def _map_handle(handle: Any, path: PathLike) -> memoryview:
    size = os.fstat(handle.fileno()).st_size
    if size == 0:
        raise CaffeFormatError("file is empty", path)
    try:
        return memoryview(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY))
    except (OSError, ValueError):
        return memoryview(bytearray(handle.read()))


def read_binary_net(path: PathLike, type_name: str = "NetParameter") -> Message:
    """Decode a binary protobuf file; blob data are zero-copy views of a private file map."""
    return _decode_binary(_map_file(path), path, type_name)


def _decode_binary(buf: Any, path: PathLike, type_name: str = "NetParameter") -> Message:
    try:
        return decode_message(buf, type_name, path=path)
    except CaffeFormatError as exc:
        if exc.offset is None:
            raise
        raise CaffeFormatError(
            f"not a valid binary {type_name} (.caffemodel): {exc.reason}", path, offset=exc.offset
        ) from None


def read_prototxt(path: PathLike, type_name: str = "NetParameter") -> Message:
    """Parse a text ``.prototxt`` (a net definition unless ``type_name`` says otherwise)."""
    fmt = sniff_format(path)
    if fmt != "text":
        kind = "an HDF5 file" if fmt == "hdf5" else "binary protobuf (a .caffemodel?)"
        raise CaffeFormatError(f"not a text prototxt: the file is {kind}", path)
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")  # editors on Windows add a BOM
    except UnicodeDecodeError as exc:
        raise CaffeFormatError("not valid UTF-8 text", path, offset=exc.start) from None
    return parse_text(text, type_name, path=path)


def read_net(path: PathLike) -> Message:
    """A ``NetParameter`` from any Caffe file: prototxt, binary caffemodel or HDF5 weights.

    HDF5 weights become a net of untyped layers holding their blobs, one per layer group
    (parameterless layers included), in the file's order.
    """
    fmt = sniff_format(path)
    if fmt == "text":
        return read_prototxt(path)
    if fmt == "binary":
        return read_binary_net(path)
    net = Message("NetParameter")
    for name, blobs in read_hdf5_layers(path).items():
        net.add("layer", Message("LayerParameter", name=name, blobs=[array_to_blob(b) for b in blobs]))
    return net


def blob_shape(blob: Message) -> tuple[int, ...]:
    """A blob's shape as Caffe's ``Blob::FromProto`` takes it: legacy (num, channels, height, width)
    when any is set, else ``shape``; with neither, ``()`` (Caffe's 0-d blob of one value, which is
    how Caffe writes a scalar parameter such as a channel-shared PReLU slope)."""
    if any(name in blob for name in ("num", "channels", "height", "width")):
        return tuple(int(blob.get(name)) for name in ("num", "channels", "height", "width"))
    return tuple(int(d) for d in blob.get("shape").get("dim"))


def check_blob_shape(shape: tuple[int, ...], path: PathLike | None = None, where: str = "blob") -> int:
    """The number of values of a blob of ``shape``, checked as Caffe's ``Blob::Reshape`` checks it:
    at most 32 axes, no negative dimension, at most 2^31 - 1 values (``(2**40, 0)`` is refused,
    as Caffe refuses it); else :class:`CaffeFormatError` naming ``path`` and ``where``."""
    if len(shape) > MAX_BLOB_AXES:
        raise CaffeFormatError(
            f"{where} has {len(shape)} axes; Caffe's blobs have at most {MAX_BLOB_AXES}", path
        )
    count = 1
    for dim in shape:
        if dim < 0:
            raise CaffeFormatError(f"{where} has a negative dimension ({_dims_text(shape)})", path)
        if dim > _INT_MAX or (count != 0 and dim > _INT_MAX // count):
            raise CaffeFormatError(
                f"{where} declares more than 2^31 - 1 values ({_dims_text(shape)}), more than "
                "Caffe's blobs hold",
                path,
            )
        count *= dim
    return count


def _dims_text(shape: tuple[int, ...]) -> str:
    text = " x ".join(str(d) for d in shape[:8])
    return text + (f" x ... ({len(shape)} axes)" if len(shape) > 8 else "")


def blob_array(blob: Message, path: PathLike | None = None, where: str = "blob") -> np.ndarray:
    """A blob's values as a float32 array of its stored shape (a view of the file when possible).

    Like Caffe's ``Blob::FromProto``, ``double_data`` wins over ``data`` when both are present.
    Shapes Caffe refuses (see :func:`check_blob_shape`) or that do not match the number of values
    raise :class:`CaffeFormatError`.
    """
    c3d = _c3d_blob(blob)
    if c3d is not None:
        shape, data = c3d
        count = check_blob_shape(shape, path, where)
    else:
        shape = blob_shape(blob)
        count = check_blob_shape(shape, path, where)
        data = blob.getall("data")
    if len(blob.getall("double_data")):
        with np.errstate(over="ignore"):  # out-of-range doubles become +-inf, as in Caffe
            data = np.asarray(blob.getall("double_data"), dtype=np.float64).astype(np.float32)
    array = np.asarray(data, dtype=np.float32)
    if array.size != count:
        raise CaffeFormatError(
            f"{where} has shape {list(shape)} ({count} values) but holds {array.size}", path
        )
    return array.reshape(shape)


#: C3D v1.0's ``BlobProto`` (facebook/C3D caffe.proto): num 1, channels 2, length 3, height 4,
#: width 5 (a varint where BVLC has ``data``), data 6 (BVLC's ``diff``), diff 7.
_C3D_WIDTH = 5


def _c3d_blob(blob: Message) -> tuple[tuple[int, ...], Any] | None:
    """The (num, channels, length, height, width) shape and values of a blob written by C3D v1.0's
    Caffe (the Sports-1M model's), read here through BVLC's field numbers; ``None`` for any other
    blob. Only C3D's layout has a varint in field 5."""
    widths = [raw for number, wire, raw in blob.unknown if number == _C3D_WIDTH and wire == 0]
    if not widths or "data" in blob or "double_data" in blob:
        return None
    dims = tuple(int(blob.get(name)) for name in ("num", "channels", "height", "width"))
    return (*dims, int(widths[-1])), blob.getall("diff")


def array_to_blob(array: np.ndarray) -> Message:
    """A ``BlobProto`` holding ``array`` (float32) with a ``shape``, laid out as Caffe's
    ``Blob::ToProto`` writes it (a 0-d array gets no ``shape`` field at all)."""
    array = np.asarray(array, dtype=np.float32)
    blob = Message("BlobProto", data=array.reshape(-1))
    if array.ndim:
        blob.set("shape", Message("BlobShape", dim=list(array.shape)))
    return blob


def net_weights(net: Message, path: PathLike | None = None) -> dict[str, list[np.ndarray]]:
    """Layer name -> blobs of every layer with blobs (V2 ``layer`` then V1 ``layers``)."""
    weights: dict[str, list[np.ndarray]] = {}
    for field in ("layer", "layers"):
        for layer in net.getall(field):
            blobs = layer.getall("blobs")
            if blobs:
                name = layer.get("name")
                weights[name] = [
                    blob_array(blob, path, f"blob {i} of layer '{name}'") for i, blob in enumerate(blobs)
                ]
    return weights


def read_weights(path: PathLike) -> dict[str, list[np.ndarray]]:
    """Layer name -> float32 blobs, in file order, shaped exactly as stored in the file.

    Reads binary ``.caffemodel`` (V1 or V2; arrays are views of a private map of the file) and
    ``.caffemodel.h5``. Layers without blobs are left out.
    """
    fmt = sniff_format(path)
    if fmt == "hdf5":
        return read_hdf5_weights(path)
    if fmt == "text":
        raise CaffeFormatError("a text prototxt holds no weights; expected a .caffemodel", path)
    return _binary_weights(read_binary_net(path), path)


def _binary_weights(net: Message, path: PathLike) -> dict[str, list[np.ndarray]]:
    if "layer" not in net and "layers" not in net and net.unknown:
        numbers = sorted({number for number, _, _ in net.unknown})
        raise CaffeFormatError(
            f"no layers, only fields a NetParameter does not have ({', '.join(map(str, numbers[:8]))}): "
            "not a .caffemodel (a .binaryproto mean file or another protobuf message?)",
            path,
        )
    return net_weights(net, path)


class FileWeights(dict[str, list[np.ndarray]]):
    """What :func:`read_weights` gives, for a loader that reads the values into memory of its own.

    :func:`open_weights` makes it. The blobs of a binary caffemodel that are views of the file's
    packed floats (all of them, in files Caffe writes) are not read by parsing: their bytes go from
    the file straight into memory that the loader keeps (one ``read`` into it: one copy, as a plain
    read of the file makes; the file map's pages are never touched, so they cost no memory), either
    into a buffer of the loader's (:meth:`readinto`) or, after :meth:`start_reading`, into arrays
    of their own read in a background thread while the loader builds its net (:meth:`take`). The
    other blobs (HDF5 datasets, unpacked or ``double_data`` values) are arrays of their own that
    nothing else holds (:meth:`owned`): a loader may keep them instead of copying them. Nothing
    handed out views the file, so a file changed or cut short later changes nothing in them.
    Close it (or use it as a context manager) once the values are taken.
    """

    def __init__(
        self, weights: dict[str, list[np.ndarray]], path: PathLike, handle: Any = None, buf: Any = None
    ) -> None:
        super().__init__(weights)
        self.path = path
        self._handle = handle
        self._lock = threading.Lock()  # one seek + read at a time on the handle (without pread)
        self._span = (0, 0)
        if handle is not None and isinstance(buf, memoryview) and isinstance(buf.obj, mmap.mmap):
            start = np.frombuffer(buf, dtype=np.uint8, count=1).ctypes.data
            self._span = (start, start + buf.nbytes)
        self._reader: spans.SpanReader | None = None

    def file_offset(self, array: np.ndarray) -> int | None:
        """Where ``array``'s bytes start in the file, when it is a contiguous float32 view of the
        file's own bytes (little-endian machines); else ``None``."""
        start, stop = self._span
        if self._handle is None or not isinstance(array, np.ndarray) or array.dtype != _NATIVE_F4:
            return None
        address = array.ctypes.data
        if not (array.flags.c_contiguous and start <= address and address + array.nbytes <= stop):
            return None
        return address - start

    def readinto(self, array: np.ndarray, out: Any) -> bool:
        """Read ``array``'s values (one of these blobs) from the file into ``out`` (a writable
        buffer of ``array.nbytes`` bytes); ``False``, with nothing read, when ``array`` is not a
        view of the file (copy it instead). A file cut short since it was parsed raises
        :class:`CaffeFormatError`."""
        offset = self.file_offset(array)
        if offset is None:
            return False
        view = memoryview(out).cast("B")
        if view.nbytes != array.nbytes:
            raise ValueError(f"readinto: {view.nbytes} bytes of room for {array.nbytes} bytes of values")
        handle = self._handle
        if handle is None:
            raise ValueError("readinto: the weights file is closed")
        try:
            spans.read_span(handle, offset, view, self._lock, lambda: False)
        except (spans.ShortFile, OSError) as exc:
            raise self._format_error(exc) from None
        return True

    def _format_error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, spans.ShortFile):
            return CaffeFormatError(
                "the file became shorter while it was read (changed by another program?)",
                self.path,
                offset=exc.offset,
            )
        if isinstance(exc, OSError):
            return CaffeFormatError(exc.strerror or str(exc), self.path)
        return exc

    def start_reading(
        self,
        layers: Iterable[str] | None = None,
        allocate: Callable[[tuple[int, ...]], np.ndarray] | None = None,
    ) -> None:
        """Read every blob that views the file (of ``layers`` only, when given: those the loader
        may use) into an array of its own, in file order, in background threads
        (:class:`converters.spans.SpanReader`): the reads release the GIL, so the loader's own work
        runs meanwhile, and on a cold page cache the wait for the disk too. :meth:`take` hands them
        out. ``allocate(shape)`` gives each blob's uninitialised float32 array (the loader's own
        memory, e.g. a tensor's ``.numpy()``); by default, page-aligned anonymous memory (numpy's
        own asks the kernel for huge pages, which makes a read into fresh memory up to twice as
        slow)."""
        if self._reader is not None or self._handle is None:
            return
        make = allocate or _anonymous_empty
        wanted = None if layers is None else set(layers)
        views = sorted(
            ((offset, array) for name, blobs in self.items() if wanted is None or name in wanted
             for array in blobs if (offset := self.file_offset(array)) is not None),
            key=lambda item: item[0],
        )  # fmt: skip

        def allocator(shape: tuple[int, ...]) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
            def made() -> tuple[np.ndarray, np.ndarray]:
                own = make(shape)
                return own, own

            return made

        places = [(id(array), offset, array.nbytes, allocator(array.shape)) for offset, array in views]
        self._reader = spans.SpanReader(self._handle, places)

    def take(self, array: np.ndarray) -> np.ndarray | None:
        """The values of ``array`` (one of these blobs) in an array of their own that the caller
        may keep: read by :meth:`start_reading` (waited for) when ``array`` views the file; else
        ``None``. Each is handed out once."""
        if self._reader is None or self.file_offset(array) is None:
            return None
        try:
            read = self._reader.wait()
        except BaseException as exc:
            raise self._format_error(exc) from None
        return read.pop(id(array), None)

    def owned(self, array: np.ndarray) -> bool:
        """Whether ``array`` holds values of its own that only these weights refer to (decoded, not
        a view of the file), so that a loader may keep it rather than copy it."""
        return (
            isinstance(array, np.ndarray)
            and self.file_offset(array) is None
            and array.dtype == _NATIVE_F4
            and array.flags.c_contiguous
            and array.flags.aligned
            and array.flags.writeable
            and not _views_a_map(array)
        )

    def close(self) -> None:
        """Stop the background reads (blobs not taken are dropped) and close the file."""
        if self._reader is not None:
            self._reader.stop()
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    def __enter__(self) -> FileWeights:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_NATIVE_F4 = np.dtype(np.float32)


def _anonymous_empty(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised float32 array of ``shape`` in page-aligned anonymous memory of its own."""
    nbytes = 4 * int(np.prod(shape, dtype=np.int64))
    if nbytes == 0 or not hasattr(mmap, "MAP_PRIVATE"):
        return np.empty(shape, dtype=_NATIVE_F4)
    private = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # not shared on fork
    return np.frombuffer(private, dtype=_NATIVE_F4).reshape(shape)


def _views_a_map(array: np.ndarray) -> bool:
    holder: object = array
    while isinstance(holder, np.ndarray):
        holder = holder.base
    if isinstance(holder, memoryview):
        holder = holder.obj
    return isinstance(holder, (mmap.mmap, bytearray, bytes))


def open_weights(path: PathLike) -> FileWeights:
    """:func:`read_weights` as a :class:`FileWeights`: the same blobs, which a loader can read
    straight from the file into its own memory (one copy, and no memory held by a file map)."""
    fmt = sniff_format(path)
    if fmt != "binary":
        return FileWeights(read_weights(path), path)
    try:
        handle = open(path, "rb", buffering=0)  # noqa: SIM115  (kept for readinto; close() closes it)
    except OSError as exc:
        raise CaffeFormatError(exc.strerror or str(exc), path) from None
    try:
        try:
            buf = _map_handle(handle, path)
        except OSError as exc:
            raise CaffeFormatError(exc.strerror or str(exc), path) from None
        hint = isinstance(buf.obj, mmap.mmap) and hasattr(mmap, "MADV_RANDOM")
        if hint:  # the parse reads only the fields between the values: on a cold cache, a fault
            buf.obj.madvise(mmap.MADV_RANDOM)  # reads its page, not the megabytes around it
        weights = FileWeights(_binary_weights(_decode_binary(buf, path), path), path, handle, buf)
        if hint:  # the values are read in order by read(); a view read later gets read-ahead again
            buf.obj.madvise(mmap.MADV_NORMAL)
        if hasattr(os, "posix_fadvise"):  # read in file order: a cold cache reads ahead twice as far
            try:
                os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            except OSError:
                pass
    except BaseException:
        handle.close()
        raise
    if weights._span == (0, 0):  # read into memory (no map): nothing left to read from the file
        weights.close()
    return weights


def write_caffemodel(net: Message, path: PathLike) -> None:
    """Write a ``NetParameter`` in binary form, atomically (no partial file on error)."""
    chunks = encode_chunks(net)
    with atomic_write(path) as handle:
        write_chunks(chunks, handle)


def write_prototxt(net: Message, path: PathLike) -> None:
    """Write a message in text form, atomically."""
    text = format_message(net)
    with atomic_write(path) as handle:
        handle.write(text.encode("utf-8"))


def weights_to_net(weights: dict[str, list[np.ndarray]], name: str | None = None) -> Message:
    """A ``NetParameter`` holding ``weights`` as V2 layers with shaped blobs."""
    net = Message("NetParameter")
    if name:
        net.set("name", name)
    for layer_name, blobs in weights.items():
        net.add(
            "layer",
            Message("LayerParameter", name=layer_name, blobs=[array_to_blob(b) for b in blobs]),
        )
    return net


def write_weights(weights: dict[str, list[np.ndarray]], path: PathLike, fmt: str = "binary") -> None:
    """Write weights as a binary ``.caffemodel`` (``fmt="binary"``) or Caffe HDF5 (``"hdf5"``)."""
    if fmt == "hdf5":
        write_hdf5_weights(weights, path)
    elif fmt == "binary":
        write_caffemodel(weights_to_net(weights), path)
    else:
        raise ValueError(f"unknown weights format {fmt!r}: use 'binary' or 'hdf5'")

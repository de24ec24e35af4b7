"""Caffe's files and net definitions, torch-free: ``caffe.proto`` facts (:mod:`.schema`), messages
(:mod:`.message`), the protobuf binary (:mod:`.binary`) and text (:mod:`.text`) formats, HDF5
weights (:mod:`.hdf5`), reading and writing files (:mod:`.formats`), net upgrade and phase
filtering (:mod:`.netdef`), layer-type traits (:mod:`.traits`), net specification
(:mod:`.netspec`) and coordinate mapping (:mod:`.geometry`)."""

from . import forks  # noqa: E402,F401  (the forks' fields join the schema before any file is read)

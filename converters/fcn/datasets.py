"""What the FCN models' datasets are, as the official data layers define them: per-channel
means (in the order of the blob they are subtracted from), class names in output order, and the
colour palette of label maps. The registry, the preprocessing and the dataset readers all read
these; nothing else writes them down."""

from __future__ import annotations

import numpy as np

#: The ILSVRC bases: VGG16's mean (VGG ILSVRC-2014 model page) and BVLC's (GoogLeNet/CaffeNet
#: train_val ``mean_value``).
VGG_MEAN_BGR = (103.939, 116.779, 123.68)
BVLC_MEAN_BGR = (104.0, 117.0, 123.0)

#: Caffe data layer means (B, G, R; HHA; log depth), per dataset (voc_layers.py, infer.py,
#: pascalcontext_layers.py, nyud_layers.py, siftflow_layers.py of the official repository).
#: VOC's is the released models' mean; the others are float32 arrays in their layers, so they are
#: rounded to float32 here to give identical inputs.
VOC_MEAN = (104.00698793, 116.66876762, 122.67891434)
CONTEXT_MEAN = tuple(float(v) for v in np.float32((104.007, 116.669, 122.679)))
SIFTFLOW_MEAN = tuple(float(v) for v in np.float32((114.578, 115.294, 108.353)))
NYUD_MEAN_BGR = tuple(float(v) for v in np.float32((116.190, 97.203, 92.318)))
NYUD_MEAN_HHA = tuple(float(v) for v in np.float32((132.431, 94.076, 118.477)))
NYUD_MEAN_LOGD = (float(np.float32(7.844)),)

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
CONTEXT_CLASSES = VOC_CLASSES + (
    "bag",
    "bed",
    "bench",
    "book",
    "building",
    "cabinet",
    "ceiling",
    "clothes",
    "computer",
    "cup",
    "door",
    "fence",
    "floor",
    "flower",
    "food",
    "grass",
    "ground",
    "keyboard",
    "light",
    "mountain",
    "mouse",
    "curtain",
    "platform",
    "sign",
    "plate",
    "road",
    "rock",
    "shelves",
    "sidewalk",
    "sky",
    "snow",
    "bedcloth",
    "track",
    "tree",
    "truck",
    "wall",
    "water",
    "window",
    "wood",
)
#: For Context classes 1..59, the index of the same class among the 459 full labels (``labels.txt``),
#: after the official layer's renames (diningtable -> table, bedcloth -> bedclothes, clothes -> cloth).
CONTEXT_FULL_LABEL = (
    2,
    23,
    25,
    31,
    34,
    45,
    59,
    65,
    72,
    98,
    397,
    113,
    207,
    258,
    284,
    308,
    347,
    368,
    416,
    427,
    9,
    18,
    22,
    33,
    44,
    46,
    68,
    80,
    85,
    104,
    115,
    144,
    158,
    159,
    162,
    187,
    189,
    220,
    232,
    259,
    260,
    105,
    296,
    355,
    295,
    324,
    326,
    349,
    354,
    360,
    366,
    19,
    415,
    420,
    424,
    440,
    445,
    454,
    458,
)
NYUD_CLASSES = (
    "wall",
    "floor",
    "cabinet",
    "bed",
    "chair",
    "sofa",
    "table",
    "door",
    "window",
    "bookshelf",
    "picture",
    "counter",
    "blinds",
    "desk",
    "shelves",
    "curtain",
    "dresser",
    "pillow",
    "mirror",
    "floor mat",
    "clothes",
    "ceiling",
    "books",
    "refridgerator",
    "television",
    "paper",
    "towel",
    "shower curtain",
    "box",
    "whiteboard",
    "person",
    "night stand",
    "toilet",
    "sink",
    "lamp",
    "bathtub",
    "bag",
    "otherstructure",
    "otherfurniture",
    "otherprop",
)
SIFTFLOW_SEMANTIC_CLASSES = (
    "awning",
    "balcony",
    "bird",
    "boat",
    "bridge",
    "building",
    "bus",
    "car",
    "cow",
    "crosswalk",
    "desert",
    "door",
    "fence",
    "field",
    "grass",
    "moon",
    "mountain",
    "person",
    "plant",
    "pole",
    "river",
    "road",
    "rock",
    "sand",
    "sea",
    "sidewalk",
    "sign",
    "sky",
    "staircase",
    "streetlight",
    "sun",
    "tree",
    "window",
)
SIFTFLOW_GEOMETRIC_CLASSES = ("sky", "horizontal", "vertical")
#: cow, desert and moon never occur in the SIFT Flow test set and are left out of its class averages.
SIFTFLOW_ABSENT_CLASSES = (8, 10, 15)


def palette(num_classes: int) -> np.ndarray:
    """The PASCAL VOC colour map for ``num_classes`` labels, as an (N, 3) uint8 array.

    Label ``i`` takes the bits of ``i`` three at a time (bit 0 -> red, 1 -> green, 2 -> blue),
    filling each channel from its most significant bit down: 0 black, 1 (128, 0, 0), 2 (0, 128, 0),
    ... 255 (224, 224, 192) (VOC's "void"). Valid for any N; colours are unique for N <= 2**24.
    """
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    labels = np.arange(num_classes, dtype=np.int64)
    colours = np.zeros((num_classes, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            colours[:, channel] |= ((labels >> channel) & 1) << (7 - bit)
        labels = labels >> 3
    return colours.astype(np.uint8)

"""The text parser against Google protobuf's own, with BVLC caffe.proto: the real-parser oracle.

``GOLDEN`` holds the binary serialisation Google protobuf 4.25.9 (Python, upb) produced after
``text_format.Parse`` of each text in ``CASES`` into the caffe.proto message compiled from the
brocolli-caffe 9.0.2 sdist (BVLC Caffe 1.0 with extra detection layers; the fields used here are
BVLC's). Our parser plus our binary writer must give the same bytes. ``REJECTED`` are texts
Google protobuf refuses; we must refuse them too, with a CaffeFormatError.
``SHARED_PROTOTXT_DIGESTS`` holds the length and sha256 of Google protobuf's serialisation of
every prototxt in ``../shared`` it accepts; ours must be identical.

Two deliberate differences, not tested here: a field caffe.proto does not know is kept (Caffe
forks add many; protobuf refuses it), and Python protobuf keeps an unknown escape such as
``"\\q"`` as the two characters, while protobuf's C++ tokenizer (the one Caffe uses) reports
it as an error, as we do.

Regenerate, with an environment holding protobuf 4.25 and a compiled ``caffe_pb2`` (see
``../shared/caffe-oracle.md``)::

    PYTHONPATH=<caffe build>/include/caffe/proto <oracle venv>/bin/python tests/test_formats_oracle.py

which also cross-checks 3,660 random messages of every caffe.proto type (binary and text, both
directions) against Google protobuf; all came out byte-identical on 2026-11-25.
"""

# ruff: noqa: E501  (the cases and their golden bytes read best one per line)

from __future__ import annotations

import sys

CASES = [
    ("comments-and-blocks", "NetParameter", '# c\nname: "n" # trailing\nlayer { name: "a" type: "ReLU" bottom: "x" top: "x" }\n'),
    ("colon-before-brace", "NetParameter", 'layer: { name: "a" include: { phase: TRAIN } }'),
    ("angle-brackets", "NetParameter", 'layer < name: "a" param < lr_mult: 2 > >'),
    ("separators", "NetParameter", 'layer { name: "a"; type: "X", top: "t"; }'),
    ("list-values", "NetParameter", 'layer { top: ["a", "b"] convolution_param { pad: [1, 2, 3] kernel_size: [] } }'),
    ("string-escapes", "NetParameter", r'name: "q\"b\\t\tn\na\x41o\101\'"'),
    ("single-quotes", "NetParameter", r"name: 'it\'s'"),
    ("concatenation", "NetParameter", 'name: "a" \'b\' "c"'),
    ("unicode", "NetParameter", 'name: "naïve 漢字"'),
    ("ints", "NetParameter", 'layer { convolution_param { num_output: 0x1F axis: -3 group: 010 } } input_dim: -2147483648 input_dim: 2147483647'),
    ("int64-and-uint64", "NetParameter", 'input_shape { dim: 9223372036854775807 dim: -9223372036854775808 dim: 0 }'),
    ("uint32-max", "NetParameter", 'layer { convolution_param { num_output: 4294967295 } }'),
    ("floats", "NetParameter", 'layer { param { lr_mult: 1e-3 decay_mult: -2.5E+2 } param { lr_mult: .5 decay_mult: 3 } loss_weight: 1.0f loss_weight: 0.1 loss_weight: 16777217 }'),
    ("float-words", "NetParameter", 'layer { loss_weight: inf loss_weight: -inf loss_weight: Infinity loss_weight: -infinity loss_weight: nan }'),
    ("float32-rounding", "NetParameter", 'layer { loss_weight: 3.4028235e38 loss_weight: 1e-45 loss_weight: 0.30000001192092896 loss_weight: 2.7182818284590452353602874713527 }'),
    ("bools", "NetParameter", 'force_backward: True debug_info: t layer { convolution_param { bias_term: False } propagate_down: true propagate_down: f propagate_down: 1 propagate_down: 0 }'),
    ("enums", "NetParameter", 'layer { include { phase: TEST } pooling_param { pool: AVE engine: CUDNN } } state { phase: 0 }'),
    ("enum-by-number", "NetParameter", 'layer { pooling_param { pool: 2 } eltwise_param { operation: 0 } }'),
    ("v1-layers", "NetParameter", 'layers { name: "c" type: CONVOLUTION blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 } layers { name: "l" type: 21 }'),
    ("legacy-inputs", "NetParameter", 'input: "data" input_dim: 1 input_dim: 3 input_dim: 227 input_dim: 227'),
    ("input-shape", "NetParameter", 'input: "a" input_shape { dim: 1 dim: 2 } input: "b" input_shape { dim: 3 }'),
    ("nested-order", "NetParameter", 'layer { top: "t" name: "n" blobs { shape { dim: 2 } data: 1 data: 2 } type: "T" bottom: "b" }'),
    ("blob-legacy-and-double", "BlobProto", 'num: 1 channels: 1 height: 1 width: 2 double_data: 0.1 double_data: -1e300 diff: 0.5'),
    ("solver", "SolverParameter", 'net: "train.prototxt" base_lr: 1e-10 lr_policy: "fixed" momentum: 0.99 max_iter: 100000 solver_mode: GPU random_seed: -1 test_iter: 736 test_interval: 999999999 type: "SGD" weight_decay: 0.0005 test_initialization: false'),
    ("datum-bytes", "Datum", r'data: "\000\001\377abc" channels: 3 float_data: 1.5 encoded: true'),
    ("crlf-tabs", "NetParameter", 'name:\t"a"\r\nlayer {\r\n\tname: "b"\r\n}\r\n'),
    ("empty", "NetParameter", ''),
    ("only-comments", "NetParameter", '# nothing\n   # here\n'),
]

REJECTED = [
    ("unterminated-block", "NetParameter", 'layer { name: "a"'),
    ("missing-colon", "NetParameter", 'name "a"'),
    ("duplicate-singular", "NetParameter", 'name: "a" name: "b"'),
    ("unknown-enum", "NetParameter", 'layer { include { phase: TRIAN } }'),
    ("enum-number-out-of-range", "NetParameter", 'layer { include { phase: 7 } }'),
    ("float-for-int", "NetParameter", 'layer { convolution_param { num_output: 1.5 } }'),
    ("negative-uint", "NetParameter", 'layer { convolution_param { num_output: -1 } }'),
    ("int32-overflow", "NetParameter", 'input_dim: 2147483648'),
    ("uint32-overflow", "NetParameter", 'layer { convolution_param { num_output: 4294967296 } }'),
    ("string-for-int", "NetParameter", 'input_dim: "3"'),
    ("int-for-string", "NetParameter", 'name: 3'),
    ("scalar-for-message", "NetParameter", 'layer: 3'),
    ("message-for-scalar", "NetParameter", 'name { }'),
    ("bad-bool", "NetParameter", 'force_backward: yes'),
    ("unterminated-string", "NetParameter", 'name: "abc'),
    ("stray-close", "NetParameter", 'layer { } }'),
    ("list-for-singular", "NetParameter", 'name: ["a"]'),
    ("singular-message-twice", "NetParameter", 'layer { convolution_param { num_output: 1 } convolution_param { pad: 2 } }'),
]

GOLDEN: dict[str, str] = {
    "comments-and-blocks": "0a016ea2060f0a0161120452654c551a0178220178",
    "colon-before-brace": "a206070a016142020800",
    "angle-brackets": "a2060a0a016132051d00000040",
    "separators": "a206090a0161120158220174",
    "list-values": "a2060f220161220162d20606180118021803",
    "string-escapes": "0a0d7122625c74096e0a61416f4127",
    "single-quotes": "0a0469742773",
    "concatenation": "0a03616263",
    "unicode": "0a0d6e61c3af766520e6bca2e5ad97",
    "ints": "2080808080f8ffffffff0120ffffffff07a20613d20610081f28088001fdffffffffffffffff01",
    "int64-and-uint64": "42160a14ffffffffffffffff7f8080808080808080800100",
    "uint32-max": "a20609d2060608ffffffff0f",
    "floats": "a206272d0000803f2dcdcccc3d2d0000804b320a1d6f12833a2500007ac3320a1d0000003f2500004040",
    "float-words": "a206192d0000807f2d000080ff2d0000807f2d000080ff2d0000c07f",
    "float32-rounding": "a206142dffff7f7f2d010000002d9a99993e2d54f82d40",
    "bools": "28013801a2060d5801580058015800d206021000",
    "enums": "32020800a2060b42020801ca070408015802",
    "enum-by-number": "a2060af206020800ca07020802",
    "v1-layers": "121922016328043d0000803f3d00000040450000803f4500000000120522016c2815",
    "legacy-inputs": "1a04646174612001200320e30120e301",
    "input-shape": "1a01611a016242040a02010242030a0103",
    "nested-order": "a2061d0a016e1201541a01622201743a0f2a080000803f000000403a030a0102",
    "blob-legacy-and-double": "080110011801200232040000003f42109a9999999999b93f9c7500883ce437fe",
    "solver": "18e00520ff93ebdc032dffe6db2e38a08d06420566697865645da4707d3f656f12033a880101a001ffffffffffffffffff01c2010e747261696e2e70726f746f747874800200c20203534744",
    "datum-bytes": "080322060001ff616263350000c03f3801",
    "crlf-tabs": "0a0161a206030a0162",
    "empty": "",
    "only-comments": "",
}

# For every prototxt in ../shared that this caffe.proto accepts: (length, sha256) of what Google
# protobuf serialised after text_format.Parse (SolverParameter for solver files). The fork files
# it refuses (enet's BN fields, yufacedetectnet's train/solver SSD fields) and yufacedetectnet's
# deploy (fork layer fields we keep in text but cannot write in binary) are not listed.
FORK_FIELDS_IN_TEXT = {"real-caffe-models/yufacedetectnet_v2_ssd/deploy.prototxt"}
SHARED_PROTOTXT_DIGESTS: dict[str, tuple[int, str]] = {
    "real-caffe-models/cifar10_quick_v1/deploy.prototxt": (436, "9a30a5b9bc0e45ee398805dc7797fad8f8bdb25d92559b2dcb3e52e8ee8eceb6"),
    "real-caffe-models/cifar10_quick_v1/solver.prototxt": (123, "e73b1fe42abc274677a1835bbbbc4609cac436703f1f79a36fecd3e11e2ec2cc"),
    "real-caffe-models/cifar10_quick_v1/train_test.prototxt": (831, "115722f5aa1d1821bdc63b8a9777f4989c7aed3fde66477e57377e9ba4b2cddb"),
    "real-caffe-models/cifar10_quick_v2/deploy.prototxt": (587, "f2103d9ff3afbdcd88d3784c2c1179f7848df6017e3c5ff49c4e81563b538de2"),
    "real-caffe-models/cifar10_small_hdf5/deploy.prototxt": (531, "560f066fe1f1068b8bed55c006d889178ed7e21925b74d3d28cd9bc00f95bde3"),
    "real-caffe-models/espcn/deploy.prototxt": (368, "8f608a4ab97f1e97955ae86f2b1a42a0ea0a74d5359060ed02b3f87f7e92454a"),
    "real-caffe-models/espcn/train.prototxt": (506, "882bc94698ed6edeb29babe49206b19ec257bc41a78f7f0546ddbaa21550a184"),
    "real-caffe-models/lenet_mnist_v2/deploy.prototxt": (455, "898b4cd828ac8e6e3b0f0fd43666c981938db8754bc2b780f64054c9d24700cd"),
    "real-caffe-models/mtcnn_pnet_rnet_onet_lnet/det1.prototxt": (685, "84c0a9db6fa5ce6825669418332ac4aad94f7ff6c98153b960cd8f3faf33b1f3"),
    "real-caffe-models/mtcnn_pnet_rnet_onet_lnet/det2.prototxt": (854, "0f564dab6a1ff997d4180661a7f138370044d946ea97a297150c7ae605c0d00c"),
    "real-caffe-models/mtcnn_pnet_rnet_onet_lnet/det3.prototxt": (1155, "45c78fa82b6b370a2962989980616fd4ea9e6e8ce7099cfa597e76a679627264"),
    "real-caffe-models/mtcnn_pnet_rnet_onet_lnet/det4.prototxt": (3997, "59d3229899c8526e46d21cd9fc446485c57b8bb1c26bb8cbcc34e94b9ceb150e"),
    "real-caffe-models/nin_cifar10_v1/DEPLOY.prototxt": (1223, "286038bbfc9d788d5f8e60763bdc9e61466e9377a94750ec1d9322ae6ee91e69"),
    "real-caffe-models/nin_cifar10_v1/train_val.prototxt": (1390, "b93e76826c2d195ab39981a0d95f2beb5e216fe686ca24a3cf03246e8a0eceff"),
    "real-caffe-models/open_nsfw_resnet50_1by2/deploy.prototxt": (27980, "f45736ea6c5dac33c2402e14cf904d0cfadc3983893da88368ad374632a97312"),
    "real-caffe-models/resnet20_cifar10/DEPLOY.prototxt": (7255, "4501518446beb784c3de8e55f3caddd500aa400527be166f1fcedcaebd82ae6a"),
    "real-caffe-models/resnet20_cifar10/solver.prototxt": (160, "ee4e148fe01497236b74337c672e9e5007cef1160660c6a2c05bae30c7c248dc"),
    "real-caffe-models/resnet20_cifar10/test.prototxt": (7424, "182d0287224fb829d6818672bb599a6fa419cd81b48e77dd535d74dc18393e46"),
    "real-caffe-models/resnet20_cifar10/train.prototxt": (7391, "8aa7bfe043108efe6e3d38d30952f810c37405eecfe87dc228817981dff73787"),
    "real-caffe-models/vdsr/deploy.prototxt": (2334, "f5a785ca4c9642255a67cc2e971b06e5b6a2db54aebea95012f033396c80b014"),
    "real-caffe-models/vdsr/train.prototxt": (2491, "15a1fa90559213a14962b648e762b14fc67fda1b1e24283056ba280d55cb3215"),
    "fcn-reference/nyud-fcn32s-color/solver.prototxt": (99, "ad49c546c102ddd9cff0ad49fef088b18ded701f33ff5ec1c43a310858b36edf"),
    "fcn-reference/nyud-fcn32s-color/test.prototxt": (2355, "c6ac025342bd34b9ef8a600bc935a609ce518897adfba006c74aec9f9cf9b7ce"),
    "fcn-reference/nyud-fcn32s-color/trainval.prototxt": (2359, "d78ff01c0b3864f373d405a07672d47a846fe84774413d8bde9a05a9d4146afe"),
    "fcn-reference/nyud-fcn32s-color-d/solver.prototxt": (99, "ad49c546c102ddd9cff0ad49fef088b18ded701f33ff5ec1c43a310858b36edf"),
    "fcn-reference/nyud-fcn32s-color-d/test.prototxt": (2436, "3a035e822fca895639e45178b7c8b6fd76a33992f19aad9dd9687c7ea78b5b00"),
    "fcn-reference/nyud-fcn32s-color-d/trainval.prototxt": (2440, "5a64b77055dacbf95c2d9a083af3f68eb0fb0bf85a01abad945bb522aeebcfd4"),
    "fcn-reference/nyud-fcn32s-color-hha/solver.prototxt": (99, "dd67ff5f70f952804840424973933ea5fbf60c668ca1772bbe62e0b0644ee86e"),
    "fcn-reference/nyud-fcn32s-color-hha/test.prototxt": (5396, "be3098e83bcb1a1eed51b30f9b37359b3e94ac6d7fc387859f3935b421bb1152"),
    "fcn-reference/nyud-fcn32s-color-hha/trainval.prototxt": (5401, "510234279d7fa40cf6e914c2b11f0e4857fc43b5d3155a167fceebdebc9144c4"),
    "fcn-reference/nyud-fcn32s-hha/solver.prototxt": (99, "ad49c546c102ddd9cff0ad49fef088b18ded701f33ff5ec1c43a310858b36edf"),
    "fcn-reference/nyud-fcn32s-hha/test.prototxt": (2353, "6af1671cee3c591778ccb4629d506ddaf96fdf6b8020165c7f6863c282f85bec"),
    "fcn-reference/nyud-fcn32s-hha/trainval.prototxt": (2357, "6884edb748fd84c3e8a3b53632f0254872834e2c0535ddc4ba56535a148324fe"),
    "fcn-reference/pascalcontext-fcn16s/solver.prototxt": (95, "454c41811e4904e95e8b63d44662b06e077c6b7e2cfced6fdea283000ec6606a"),
    "fcn-reference/pascalcontext-fcn16s/train.prototxt": (2683, "c4b6dd843ff3179b3a2803edd5967197d61c7182b1f9f3a1301c4c0dcfb5a89a"),
    "fcn-reference/pascalcontext-fcn16s/val.prototxt": (2681, "175b24c8f8c42a990310c5af8108271535662f83c7a767e505e5e9a20eaecb3d"),
    "fcn-reference/pascalcontext-fcn32s/solver.prototxt": (95, "c235b8a8b694d639090ce9cbdab25cb1a8b4b68835f61f51962e9bd147fd9f00"),
    "fcn-reference/pascalcontext-fcn32s/train.prototxt": (2395, "3398dabfe7fc043ab329c2791d2947edb036d5e590eecaca116971567a1d9c6f"),
    "fcn-reference/pascalcontext-fcn32s/val.prototxt": (2393, "bdd846ca4108677d3eb1bfce1d0d16b055d8e9659628ac46a7e3beeeb6d65fba"),
    "fcn-reference/pascalcontext-fcn8s/solver.prototxt": (95, "3be9517e52b7a76f40360eb4dbc4ba32f35ce24e70b3e52eb9439b97f8b2649c"),
    "fcn-reference/pascalcontext-fcn8s/train.prototxt": (2982, "906242c0e77d380c196b3c9df71c1fc168f5767062863e14df97039d693bc233"),
    "fcn-reference/pascalcontext-fcn8s/val.prototxt": (2980, "ce00157d9464f05b5ebe8a9a7fb421682fef694d8f5b6e7364564e1becc10824"),
    "fcn-reference/siftflow-fcn16s/solver.prototxt": (80, "452ae754572e591a05665c74949defd461c74100e839e05eec61976b04b84ac3"),
    "fcn-reference/siftflow-fcn16s/test.prototxt": (3340, "804019b06ce024e1952d00b4c87050cc990eb3d98fdf038dc8670b4265fa20c3"),
    "fcn-reference/siftflow-fcn16s/trainval.prototxt": (3344, "7287c04fe35d8f5a60b4e9358eee8e9509e755b47ad9adb0dec088749771befa"),
    "fcn-reference/siftflow-fcn32s/solver.prototxt": (80, "baa6ff763cdcea57b17795581995929758734c1ccc2b497cb4e26fee0f57dc01"),
    "fcn-reference/siftflow-fcn32s/test.prototxt": (2660, "acbb782dc7e53df705a77893ff1f2e42216e09ba6923b3ef799417d94f2dd095"),
    "fcn-reference/siftflow-fcn32s/trainval.prototxt": (2664, "1876896efa971b64e6869d5b1f443b6632417bf08f3a7f8e62a690754e483e4e"),
    "fcn-reference/siftflow-fcn8s/solver.prototxt": (80, "452ae754572e591a05665c74949defd461c74100e839e05eec61976b04b84ac3"),
    "fcn-reference/siftflow-fcn8s/test.prototxt": (4042, "8367eab2a1c65885e101154f342bfa68492073682d1c8d00192febc38de216d6"),
    "fcn-reference/siftflow-fcn8s/trainval.prototxt": (4046, "e727ddab65b068bd27aa5f9cb3a09d99ef0bd677c3ef2e246e6f31718de59918"),
    "fcn-reference/voc-fcn-alexnet/solver.prototxt": (95, "3b92b9598e70efddd4bd4f30ea66b4d22b5ab5ca83f34b51479aa940f11d52b5"),
    "fcn-reference/voc-fcn-alexnet/train.prototxt": (1250, "ab6ad516d6590e9952c31c91d7ac92cb3acff51500b7f271b16710c6d699d473"),
    "fcn-reference/voc-fcn-alexnet/val.prototxt": (1255, "3777683685a336b8708e70adbca74f6fcc5a20ce1a08c440d5688a85879db8d1"),
    "fcn-reference/voc-fcn16s/solver.prototxt": (95, "f92b65c4e5a1da425962156efcf1682e00465d0e39398c3f652498f4c40b3086"),
    "fcn-reference/voc-fcn16s/train.prototxt": (2670, "520293db1f3fbf4173fc75af0acb7958f8c3b65f2127b24b8dc2beb06cdb3e53"),
    "fcn-reference/voc-fcn16s/val.prototxt": (2675, "a3108279f49ba5b0626f7cd4a6c73c6141b5b78f7dfa90bd5fe2eabca1f10250"),
    "fcn-reference/voc-fcn32s/solver.prototxt": (95, "ba1e3070d889b3f91a21da27427471b69bcbf4828bb5f48e54d2a90c08765640"),
    "fcn-reference/voc-fcn32s/train.prototxt": (2379, "449706ef24317d109341729a93b693d95d50c6ad093efa076d2be3a90a71fc83"),
    "fcn-reference/voc-fcn32s/val.prototxt": (2384, "d1c624014678c1a7d5bd8e1fab09ecd0503c2d8f445e843ab2dc2cf1f721552b"),
    "fcn-reference/voc-fcn8s/deploy.prototxt": (2696, "5cebf4d89d5db6c6d2794d5863d12762ff85474164c44bca648312ff9b0aa7ab"),
    "fcn-reference/voc-fcn8s/solver.prototxt": (95, "3d29b29c742be25d0f961b6ef1bb87143d28a49300cfe4867937b244758a0150"),
    "fcn-reference/voc-fcn8s/train.prototxt": (2966, "f0a52687af7879d19eb6cff87f409c7f94935c9d3dc1b10f681cc3e9123dba7f"),
    "fcn-reference/voc-fcn8s/val.prototxt": (2971, "be0394b7faea7cc63bbab68b6f6eb15c65166693b135e35a65eca43f1f94c14d"),
    "fcn-reference/voc-fcn8s-atonce/solver.prototxt": (95, "4e997470c92d18afa61897e53a520faf2fb29c57fa68db8ac57680da54c5a3fc"),
    "fcn-reference/voc-fcn8s-atonce/train.prototxt": (3118, "3fea6ff9784f0356b79a7d6a5492f6a4edd57680e962eecc057e8ebc48bc849d"),
    "fcn-reference/voc-fcn8s-atonce/val.prototxt": (3123, "555428f638210f35705c57ea83b1396fbf862d387d8c01ab663df1e29a2902a4"),
}


def _regenerate() -> None:
    """Print GOLDEN and the digests, check REJECTED, with Google protobuf (needs caffe_pb2)."""
    import hashlib
    from pathlib import Path

    import caffe_pb2  # type: ignore[import-not-found]
    from google.protobuf import text_format  # type: ignore[import-not-found]

    print("GOLDEN = {")
    for ident, type_name, text in CASES:
        message = getattr(caffe_pb2, type_name)()
        text_format.Parse(text, message)
        print(f'    "{ident}": "{message.SerializeToString().hex()}",')
    print("}")
    print("SHARED_PROTOTXT_DIGESTS = {")
    shared = Path(__file__).resolve().parent.parent.parent / "shared"
    paths = sorted(shared.glob("real-caffe-models/*/*.prototxt")) + sorted(shared.glob("fcn-reference/**/*.prototxt"))
    for path in paths:
        if str(path.relative_to(shared)) in FORK_FIELDS_IN_TEXT:
            continue
        message = getattr(caffe_pb2, "SolverParameter" if "solver" in path.name else "NetParameter")()
        try:
            text_format.Parse(path.read_text(), message)
        except text_format.ParseError:
            continue
        data = message.SerializeToString()
        print(f'    "{path.relative_to(shared)}": ({len(data)}, "{hashlib.sha256(data).hexdigest()}"),')
    print("}")
    for ident, type_name, text in REJECTED:
        try:
            text_format.Parse(text, getattr(caffe_pb2, type_name)())
            print(f"# NOT rejected by protobuf: {ident}")
        except text_format.ParseError as exc:
            print(f"# rejected {ident}: {exc}")


def _cross_check_random(per_type: int = 60) -> None:
    """Random messages of every type (tests/test_caffe_formats_roundtrip.py's generator): our binary
    bytes, re-serialised by Google protobuf, must come back identical; our text must parse in
    Google protobuf to the same bytes; Google's text must parse in ours to the same bytes."""
    import random
    from pathlib import Path

    import caffe_pb2  # type: ignore[import-not-found]
    import numpy as np
    from google.protobuf import text_format  # type: ignore[import-not-found]

    here = Path(__file__).resolve().parent
    sys.path[:0] = [str(here.parent), str(here)]
    from test_caffe_formats_roundtrip import random_message  # type: ignore[import-not-found]

    from converters import Message
    from converters.caffe.binary import decode_message, encode_message
    from converters.caffe.schema import MESSAGES
    from converters.caffe.text import format_message, parse_text

    def known_to_google(type_name: str, name: str) -> bool:
        cls = getattr(caffe_pb2, type_name, None)
        field = cls.DESCRIPTOR.fields_by_name.get(name) if cls is not None else None
        return field is not None and field.number == MESSAGES[type_name].by_name[name].number

    def prune(msg: Message) -> Message:  # drop fields this caffe.proto lacks (it predates a few)
        for name, values in list(msg.fields()):
            if not known_to_google(msg.type, name):
                msg.remove(name)
            elif not isinstance(values, np.ndarray):
                for value in values:
                    if isinstance(value, Message):
                        prune(value)
        return msg

    rng = random.Random(2026)
    checked = 0
    for type_name in MESSAGES:
        cls = getattr(caffe_pb2, type_name, None)
        if cls is None:
            continue
        for _ in range(per_type):
            ours = encode_message(prune(random_message(type_name, rng)))
            google = cls()
            google.ParseFromString(ours)
            assert google.SerializeToString() == ours, type_name
            again = cls()
            text_format.Parse(format_message(decode_message(ours, type_name)), again)
            assert again.SerializeToString() == ours, type_name
            assert encode_message(parse_text(text_format.MessageToString(google), type_name)) == ours
            checked += 1
    print(f"# cross-checked {checked} random messages with Google protobuf: all identical")


if __name__ == "__main__":
    _regenerate()
    _cross_check_random()
    sys.exit(0)

import hashlib  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from conftest import need_shared  # noqa: E402

from converters import CaffeFormatError, read_prototxt  # noqa: E402
from converters.caffe.binary import encode_message  # noqa: E402
from converters.caffe.text import parse_text  # noqa: E402


def test_every_case_has_a_golden_serialisation() -> None:
    assert sorted(GOLDEN) == sorted(ident for ident, _, _ in CASES)


@pytest.mark.parametrize(("ident", "type_name", "text"), CASES, ids=[case[0] for case in CASES])
def test_parse_gives_the_bytes_google_protobuf_gives(ident: str, type_name: str, text: str) -> None:
    assert encode_message(parse_text(text, type_name)).hex() == GOLDEN[ident]


@pytest.mark.parametrize(("ident", "type_name", "text"), REJECTED, ids=[case[0] for case in REJECTED])
def test_texts_google_protobuf_refuses_are_refused(ident: str, type_name: str, text: str) -> None:
    with pytest.raises(CaffeFormatError) as info:
        parse_text(text, type_name, path="case.prototxt")
    assert info.value.line == 1 and info.value.column is not None


@pytest.mark.parametrize("relative", sorted(SHARED_PROTOTXT_DIGESTS))
def test_shared_prototxts_serialise_as_google_protobuf_does(relative: str) -> None:
    path = need_shared(*Path(relative).parts)
    data = encode_message(read_prototxt(path, "SolverParameter" if "solver" in path.name else "NetParameter"))
    assert (len(data), hashlib.sha256(data).hexdigest()) == SHARED_PROTOTXT_DIGESTS[relative]

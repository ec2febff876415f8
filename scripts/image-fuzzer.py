#!/usr/bin/env python3
"""Images from QEMU's qcow2 image fuzzer, one per seed, for compare-check.

Usage: scripts/image-fuzzer.py QEMU/tests/image-fuzzer OUT_DIR FIRST_SEED COUNT

Runs the fuzzer's generator (the `qcow2` package of QEMU's
tests/image-fuzzer, GPL, not copied here) as a library: each seed makes one
image. Like the fuzzer runner's --config, most seeds fuzz one group of
fields, so that the image still opens and `check` has tables to walk; every
fourth seed fuzzes the whole image. One seed in three names a backing file
`base.img`, which is created next to the images. Then:

    cargo build -p qcow2-cli
    cargo run -p qcow2-testkit --bin compare-check -- OUT_DIR
"""
import os
import random
import subprocess
import sys

GROUPS = [
    [['l1_table']], [['l2_tables']], [['refcount_table']], [['refcount_blocks']],
    [['l1_table'], ['l2_tables']], [['refcount_table'], ['refcount_blocks']],
    [['header', 'refcount_table_clusters']], [['header', 'nb_snapshots']],
    [['header', 'snapshots_offset'], ['header', 'nb_snapshots']],
    [['header', 'l1_size']], [['header', 'size']], [['header', 'autoclear_features']],
    [['header', 'incompatible_features']], [['header', 'compatible_features']],
    [['feature_name_table']], [['backing_file_format']], [['backing_file_name']],
    [['header', 'refcount_table_offset']], [['header', 'l1_table_offset']],
]


def main():
    fuzzer, out, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sys.path.insert(0, fuzzer)
    import qcow2  # QEMU's generator

    os.makedirs(out, exist_ok=True)
    for seed in range(first, first + count):
        random.seed(seed)
        backing = b'base.img' if seed % 3 == 1 else None
        fmt = random.choice([b'raw', b'qcow2']) if backing else None
        fields = None if seed % 4 == 0 else random.choice(GROUPS)
        path = os.path.join(out, 'seed-%05d.qcow2' % seed)
        try:
            qcow2.create_image(path, backing, fmt, fields)
        except Exception as error:  # the generator fails on some seeds
            print('seed %d: generator failed: %r' % (seed, error), file=sys.stderr)
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2',
                    os.path.join(out, 'base.img'), '10M'], check=True)


if __name__ == '__main__':
    main()

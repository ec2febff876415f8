#!/usr/bin/env bash
# Builds a bootable GPT test disk for the UEFI boot tests and prints its path.
#
#     scripts/boot-disk.sh ARCH          ARCH = x86_64 | aarch64
#
# Stdout is one line, the absolute path of target/boot-disk/ARCH/disk.raw;
# progress and errors go to stderr. The disk is rebuilt only when this script
# or one of its inputs (kernel, busybox, GRUB modules) changed, so a second
# call returns at once. Concurrent calls are serialised with a lock.
#
# What the disk holds (scripts/boot-disk.md says why it is made this way):
#   partition 1  EFI System Partition, FAT16, with GRUB at the removable-media
#                path \EFI\BOOT\BOOTX64.EFI (BOOTAA64.EFI). GRUB is made with
#                grub-mkimage; its grub.cfg sits in an embedded memdisk and
#                finds partition 2 by its file system label, looking first on
#                the disk GRUB itself was loaded from.
#   partition 2  ext4, label qcow2-root, holding /boot/vmlinuz (a Debian cloud
#                kernel) and /boot/initrd.img (a gzip cpio with a static
#                busybox whose /init prints the marker line below and powers
#                the machine off).
#   Marker:      QCOW2-BOOT-MARKER: reached init on ARCH
#
# Everything is made without root and without loop devices: sfdisk writes the
# GPT into the image file, mkfs.vfat -C + mcopy and mkfs.ext4 -d build the
# partitions as files, dd places them. UUIDs, volume ids and timestamps are
# fixed, so rebuilding from the same inputs gives the same bytes.
#
# x86_64 uses the host's packages (installed by scripts/setup.sh). The arm64
# packages (kernel, busybox-static, GRUB's arm64-efi modules) are fetched once
# with `apt-get download` through a private apt state under
# target/boot-disk/arm64-apt (no dpkg --add-architecture) and the needed files
# are unpacked from the .debs into target/boot-disk/arm64-root.
set -euo pipefail
# sfdisk, mkfs.* and debugfs live in sbin, which a user's PATH may lack.
PATH=$PATH:/usr/sbin:/sbin
# File modes on the disk must not depend on the caller's umask.
umask 022

log() { echo "boot-disk: $*" >&2; }
die() {
    echo "boot-disk: error: $*" >&2
    exit 1
}

[[ $# == 1 ]] || die "usage: $0 x86_64|aarch64"
arch=$1
case $arch in
x86_64)
    grub_platform=x86_64-efi
    efi_name=BOOTX64.EFI
    console=ttyS0
    ;;
aarch64)
    grub_platform=arm64-efi
    efi_name=BOOTAA64.EFI
    console=ttyAMA0
    ;;
*) die "unknown architecture '$arch' (expected x86_64 or aarch64)" ;;
esac

repo=$(cd "$(dirname "$0")/.." && pwd)
script="$repo/scripts/boot-disk.sh"
cache="$repo/target/boot-disk"
out="$cache/$arch"
disk="$out/disk.raw"

# Fixed identities: the GPT, the partitions and both file systems. The tests
# and GRUB rely only on the label; the UUIDs are fixed for reproducibility.
readonly disk_guid=5143c032-0000-4b00-8000-000000000001
readonly esp_part_uuid=5143c032-0000-4b00-8000-0000000000e1
readonly root_part_uuid=5143c032-0000-4b00-8000-0000000000e2
readonly root_fs_uuid=5143c032-0000-4b00-8000-0000000000f2
readonly root_hash_seed=5143c032-0000-4b00-8000-0000000000f3
readonly esp_volume_id=5143C032
readonly root_label=qcow2-root
# All file times on the disk (2024-01-01T00:00:00Z; FAT cannot store 1970).
readonly epoch=1704067200
# The ESP is small FAT16: GRUB is ~1 MiB; UEFI firmware reads FAT12/16/32.
readonly esp_mib=4
readonly marker="QCOW2-BOOT-MARKER: reached init on $arch"
readonly cmdline="console=$console panic=-1 quiet"

# Host tools, with the Debian package that provides each.
need_tools() {
    local missing=() pkgs=() tool pkg
    for pair in sfdisk:fdisk mkfs.vfat:dosfstools mcopy:mtools mmd:mtools \
        mkfs.ext4:e2fsprogs debugfs:e2fsprogs cpio:cpio grub-mkimage:grub-common gzip:gzip \
        dpkg-deb:dpkg apt-get:apt flock:util-linux; do
        tool=${pair%%:*} pkg=${pair#*:}
        if ! command -v "$tool" >/dev/null; then
            missing+=("$tool")
            pkgs+=("$pkg")
        fi
    done
    ((${#missing[@]} == 0)) ||
        die "missing ${missing[*]}; run scripts/setup.sh as root, or: apt-get install -y ${pkgs[*]}"
}

# The package that a Debian metapackage (linux-image-cloud-amd64) depends on,
# e.g. linux-image-6.1.0-57-cloud-amd64.
first_dependency() {
    sed -n 's/^Depends: *\([^ ,]*\).*/\1/p' | head -n1
}

# arm64 inputs: fetched once into the cache, then used offline.
arm64_apt="$cache/arm64-apt"
arm64_root="$cache/arm64-root"
fetch_arm64() {
    # The GRUB modules must match the host's grub-mkimage: refetch when the
    # host's GRUB changed. Otherwise the cached packages are used offline.
    local grub_version
    grub_version=$(dpkg-query -W -f='${Version}' grub-common)
    if [[ -f $arm64_root/.complete && $(cat "$arm64_root/.complete") == "$grub_version" ]]; then
        return
    fi
    log "fetching arm64 kernel, busybox-static and GRUB modules (apt-get download)"
    rm -rf "$arm64_apt" "$arm64_root"
    mkdir -p "$arm64_apt"/{lists/partial,archives/partial,parts,prefs,debs} "$arm64_root"
    : >"$arm64_apt/status"
    # The host's own Debian repositories (same mirror and suites), arm64 only.
    # shellcheck disable=SC2016 # $(...) are apt's format fields, not shell
    apt-get indextargets --format '$(ORIGIN) $(REPO_URI) $(RELEASE) $(COMPONENT)' \
        'Identifier: Packages' 2>/dev/null | awk '$1 == "Debian" && $4 == "main" {
            print "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]", $2, $3, $4 }' |
        sort -u >"$arm64_apt/sources.list"
    [[ -s $arm64_apt/sources.list ]] ||
        die "the host's apt knows no Debian repository; run apt-get update (as root) first"
    local apt_opts=(
        -o APT::Architecture=arm64 -o APT::Architectures::=arm64
        -o Dir::State="$arm64_apt" -o Dir::State::Lists="$arm64_apt/lists"
        -o Dir::State::status="$arm64_apt/status"
        -o Dir::Cache="$arm64_apt" -o Dir::Cache::archives="$arm64_apt/archives"
        -o Dir::Etc::SourceList="$arm64_apt/sources.list"
        -o Dir::Etc::SourceParts="$arm64_apt/parts"
        -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts="$arm64_apt/prefs"
        -o Acquire::Languages=none
        -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
        -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
        -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false
        -o APT::Sandbox::User=root
    )
    apt-get "${apt_opts[@]}" -q update >&2 ||
        die "apt-get update for arm64 failed (network to the Debian mirror needed once)"
    local kernel_pkg
    kernel_pkg=$(apt-cache "${apt_opts[@]}" show linux-image-cloud-arm64 | first_dependency)
    [[ -n $kernel_pkg ]] || die "cannot resolve linux-image-cloud-arm64 to a kernel package"
    (cd "$arm64_apt/debs" && apt-get "${apt_opts[@]}" -q download \
        "$kernel_pkg" busybox-static "grub-efi-arm64-bin=$grub_version" >&2) ||
        die "apt-get download of $kernel_pkg busybox-static grub-efi-arm64-bin=$grub_version failed"
    # Only the files the disk needs; the kernel package's modules are 100 MiB.
    local deb
    for deb in "$arm64_apt"/debs/*.deb; do
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$arm64_root" --wildcards \
            './boot/vmlinuz-*' './bin/busybox' './usr/lib/grub/arm64-efi/*' 2>/dev/null ||
            true
    done
    [[ -x $arm64_root/bin/busybox ]] || die "no bin/busybox in the arm64 busybox-static package"
    compgen -G "$arm64_root/boot/vmlinuz-*" >/dev/null || die "no kernel in $kernel_pkg"
    [[ -f $arm64_root/usr/lib/grub/arm64-efi/normal.mod ]] ||
        die "no GRUB modules in grub-efi-arm64-bin"
    # The package lists served their purpose; the .debs stay as the record.
    rm -rf "$arm64_apt/lists" "$arm64_apt"/*.bin
    echo "$grub_version" >"$arm64_root/.complete"
}

# Sets kernel, busybox and grub_modules for $arch.
select_inputs() {
    case $arch in
    x86_64)
        local kernel_pkg
        kernel_pkg=$(dpkg-query -W -f='Depends: ${Depends}\n' linux-image-cloud-amd64 2>/dev/null |
            first_dependency) ||
            true
        [[ -n $kernel_pkg ]] ||
            die "linux-image-cloud-amd64 is not installed; run scripts/setup.sh as root, or: apt-get install -y linux-image-cloud-amd64"
        kernel=/boot/vmlinuz-${kernel_pkg#linux-image-}
        busybox=/bin/busybox
        grub_modules=/usr/lib/grub/x86_64-efi
        [[ -f $kernel ]] || die "$kernel_pkg is installed but $kernel is missing"
        # busybox (not -static) is dynamically linked and cannot run alone.
        dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' ||
            die "busybox-static is not installed; run scripts/setup.sh as root, or: apt-get install -y busybox-static"
        [[ -f $grub_modules/normal.mod ]] ||
            die "no GRUB x86_64-efi modules; run: apt-get install -y grub-efi-amd64-bin"
        ;;
    aarch64)
        fetch_arm64
        kernel=$(compgen -G "$arm64_root/boot/vmlinuz-*" | head -n1)
        busybox=$arm64_root/bin/busybox
        grub_modules=$arm64_root/usr/lib/grub/arm64-efi
        ;;
    esac
}

# A digest of everything the disk is made from: rebuild when it changes.
input_key() {
    {
        sha256sum "$script" "$kernel" "$busybox"
        dpkg-query -W -f='${Package} ${Version}\n' grub-common mtools dosfstools e2fsprogs fdisk cpio
        (cd "$grub_modules" && sha256sum ./*.mod)
    } | sha256sum | cut -d' ' -f1
}

# Sets the modification time of every path under $1 to $epoch.
pin_times() {
    find "$1" -exec touch -h -d "@$epoch" {} +
}

make_initrd() { # $1 = staging dir, $2 = output file
    local dir=$1/initramfs
    mkdir -p "$dir"/{bin,dev,proc,sys}
    cp "$busybox" "$dir/bin/busybox"
    ln -s busybox "$dir/bin/sh"
    # The kernel finds no /dev/console in this cpio (making the node needs
    # root), so /init mounts devtmpfs and opens the console itself.
    cat >"$dir/init" <<EOF
#!/bin/sh
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec >/dev/console 2>&1 </dev/console
echo "$marker"
/bin/busybox poweroff -f
EOF
    chmod 0755 "$dir/init" "$dir/bin/busybox"
    pin_times "$dir"
    (cd "$dir" && find . -print0 | LC_ALL=C sort -z |
        cpio --quiet --null --create --format=newc --reproducible --owner=0:0) |
        gzip -n -9 >"$2"
}

make_grub() { # $1 = staging dir, $2 = output EFI file
    local dir=$1/grub
    mkdir -p "$dir/boot/grub"
    # $cmdpath is GRUB's own location, e.g. (hd0,gpt1)/EFI/BOOT: the label
    # search tries partition 2 of that disk first (--hint), so another disk
    # with the same label cannot win.
    cat >"$dir/boot/grub/grub.cfg" <<EOF
set timeout=0
regexp --set=1:esp_disk '^\\(([^,]+),' "\$cmdpath"
if ! search --no-floppy --label --set=root --hint="\$esp_disk,gpt2" $root_label; then
    echo "QCOW2-BOOT-ERROR: no file system labelled $root_label"
    halt
fi
linux /boot/vmlinuz $cmdline
initrd /boot/initrd.img
boot
EOF
    pin_times "$dir"
    tar -C "$dir" --create --format=ustar --sort=name --mtime="@$epoch" \
        --owner=0 --group=0 --numeric-owner -f "$1/memdisk.tar" boot
    grub-mkimage --directory="$grub_modules" --format="$grub_platform" \
        --output="$2" --prefix='(memdisk)/boot/grub' --memdisk="$1/memdisk.tar" \
        memdisk tar part_gpt part_msdos fat ext2 normal linux boot search \
        search_fs_uuid search_label search_fs_file regexp test echo halt reboot \
        configfile ls cat efi_gop
}

make_esp() { # $1 = staging dir, $2 = GRUB EFI file, $3 = output image
    export SOURCE_DATE_EPOCH=$epoch # mtools stamps entries with it
    mkfs.vfat -C --invariant -F 16 -s 1 -i "$esp_volume_id" -n ESP "$3" $((esp_mib * 1024)) >/dev/null
    mmd -i "$3" ::/EFI ::/EFI/BOOT
    touch -d "@$epoch" "$2"
    mcopy -m -i "$3" "$2" "::/EFI/BOOT/$efi_name"
}

make_root() { # $1 = staging dir, $2 = initrd, $3 = output image; echoes size in MiB
    local dir=$1/root
    mkdir -p "$dir/boot"
    cp "$kernel" "$dir/boot/vmlinuz"
    cp "$2" "$dir/boot/initrd.img"
    chmod 0644 "$dir/boot/vmlinuz" "$dir/boot/initrd.img"
    pin_times "$dir"
    # Content plus a quarter and 2 MiB for metadata and the journal, in MiB.
    local content_kib mib
    content_kib=$(du -sk --apparent-size "$dir" | cut -f1)
    mib=$(((content_kib * 5 / 4) / 1024 + 3))
    # 4 KiB blocks, few inodes, no reserve: small. E2FSPROGS_FAKE_TIME pins
    # the superblock and inode times; hash_seed pins the directory hashes.
    truncate -s "${mib}M" "$3"
    E2FSPROGS_FAKE_TIME=$epoch mkfs.ext4 -q -F -b 4096 -N 64 -m 0 \
        -L "$root_label" -U "$root_fs_uuid" -E "hash_seed=$root_hash_seed,root_owner=0:0" \
        -d "$dir" "$3" "${mib}M" >&2
    # mkfs.ext4 -d copies the staged files' owner, ctime and atime (not
    # settable without root); pin them so that a rebuild writes the same inodes.
    local path field cmds=()
    while IFS= read -r path; do
        cmds+=("sif \"$path\" uid 0" "sif \"$path\" gid 0")
        for field in atime ctime mtime crtime; do
            cmds+=("sif \"$path\" $field @$epoch" "sif \"$path\" ${field}_extra 0")
        done
    done < <(cd "$dir" && find . -mindepth 1 | sed 's|^\.||' | LC_ALL=C sort)
    printf '%s\n' "${cmds[@]}" | debugfs -w -f - "$3" >/dev/null 2>&1 ||
        die "debugfs could not pin the times in $3"
    echo "$mib"
}

build() {
    tmp=$(mktemp -d "$out/build.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    log "building $disk from $(basename "$kernel")"
    make_initrd "$tmp" "$tmp/initrd.img"
    make_grub "$tmp" "$tmp/$efi_name"
    make_esp "$tmp" "$tmp/$efi_name" "$tmp/esp.img"
    local root_mib
    root_mib=$(make_root "$tmp" "$tmp/initrd.img" "$tmp/root.img")
    # Layout in MiB: 1 for the GPT, the ESP, the root, 1 for the backup GPT.
    local esp_start=1 root_start=$((1 + esp_mib))
    local total_mib=$((root_start + root_mib + 1))
    truncate -s "${total_mib}M" "$tmp/disk.raw"
    sfdisk --quiet --no-reread --no-tell-kernel "$tmp/disk.raw" >&2 <<EOF
label: gpt
label-id: $disk_guid
unit: sectors
start=$((esp_start * 2048)), size=$((esp_mib * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$esp_part_uuid, name="EFI System Partition"
start=$((root_start * 2048)), size=$((root_mib * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$root_part_uuid, name="$root_label"
EOF
    dd if="$tmp/esp.img" of="$tmp/disk.raw" bs=1M seek="$esp_start" conv=notrunc,sparse status=none
    dd if="$tmp/root.img" of="$tmp/disk.raw" bs=1M seek="$root_start" conv=notrunc,sparse status=none
    mv "$tmp/disk.raw" "$disk"
    log "built $disk: ${total_mib} MiB (ESP ${esp_mib} MiB, root ${root_mib} MiB)"
}

need_tools
mkdir -p "$out"
exec 9>"$out/lock"
flock 9
select_inputs
key=$(input_key)
if [[ -f $disk && -f $out/disk.key && $(cat "$out/disk.key") == "$key" ]]; then
    log "up to date: $disk"
else
    rm -f "$out/disk.key"
    build
    echo "$key" >"$out/disk.key"
fi
echo "$disk"

#!/usr/bin/env bash
# Build the train and serve images with podman, check each from inside, report sizes and
# times, and optionally push them.
#
#   scripts/build-images.sh [--push] [--no-check] [--target train|serve]...
#
# Image names come from ihl.edge.container_images (IHL_IMAGE_REPOSITORY, IHL_IMAGE_TAG).
# The base image is IHL_BASE_IMAGE (pin it by digest for releases); without it the script pulls
# python:3.11-slim-bookworm, and where no registry can be reached it builds a Debian
# bookworm stand-in with debootstrap (needs root and the debootstrap package).
set -euo pipefail
cd "$(dirname "$0")/.."

push=false check=true targets=()
while (($#)); do
    case "$1" in
        --push) push=true ;;
        --no-check) check=false ;;
        --target)
            [[ ${2:-} == train || ${2:-} == serve ]] ||
                { echo "--target takes train or serve" >&2; exit 2; }
            targets+=("$2"); shift ;;
        -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
((${#targets[@]})) || targets=(train serve)

command -v podman >/dev/null || { echo "podman not found: apt-get install podman" >&2; exit 1; }

# Downloads inside the build trust the machine's CA bundle (proxies that re-sign TLS).
ca_bundle=/etc/ssl/certs/ca-certificates.crt
build=(podman build --isolation chroot --format docker)
[[ -f $ca_bundle ]] && build+=(-v "$ca_bundle:$ca_bundle:ro")

standin=localhost/ihl-base:bookworm-standin
base=${IHL_BASE_IMAGE:-}
if [[ -z $base ]]; then
    if podman pull -q docker.io/library/python:3.11-slim-bookworm >/dev/null 2>&1; then
        base=docker.io/library/python:3.11-slim-bookworm
    else
        base=$standin
        if ! podman image exists "$standin"; then
            command -v debootstrap >/dev/null ||
                { echo "no registry and no debootstrap: apt-get install debootstrap" >&2; exit 1; }
            echo "== no registry reachable: building $standin with debootstrap"
            rootfs=$(mktemp -d /var/tmp/ihl-rootfs.XXXXXX)
            trap 'rm -rf "$rootfs"' EXIT
            SECONDS=0
            debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
                bookworm "$rootfs" >/dev/null
            tar -C "$rootfs" -c . | podman import -q - "$standin" >/dev/null
            rm -rf "$rootfs"
            echo "   stand-in base built in ${SECONDS}s"
        fi
    fi
fi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# "-dirty" when what goes into the image differs from that commit.
context=(Dockerfile .dockerignore pyproject.toml uv.lock README.md ihl components pipelines serving)
[[ -n $(git status --porcelain -- "${context[@]}" 2>/dev/null) ]] && revision+=-dirty
source_url=${IHL_IMAGE_SOURCE:-https://github.com/ihl-pose/ihl}
# One source of truth for the references: the same function the components and manifest use.
refs=$(uv run --frozen python -c \
    'import sys; from ihl.edge.container_images import image; print(*(image(t) for t in sys.argv[1:]))' \
    "${targets[@]}")
read -r -a refs <<<"$refs"

echo "== base $base, revision $revision"
report=()
for i in "${!targets[@]}"; do
    target=${targets[$i]} ref=${refs[$i]}
    echo "== building $target -> $ref"
    SECONDS=0
    "${build[@]}" --target "$target" --tag "$ref" \
        --build-arg BASE_IMAGE="$base" --build-arg VERSION="$version" \
        --build-arg REVISION="$revision" --build-arg SOURCE="$source_url" \
        --label org.opencontainers.image.base.name="$base" .
    built=$SECONDS

    # Nothing that looks like a credential may appear in the recorded build steps or env.
    leaks=$(podman history --no-trunc --format '{{.CreatedBy}}' "$ref"
        podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$ref")
    if grep -inE 'aws_(secret|access|session)|password|passwd|token=|secret=|api_?key' <<<"$leaks"; then
        echo "!! $ref: the build steps or environment above look like they carry a secret" >&2
        exit 1
    fi

    checked=skipped
    if $check; then
        echo "== checking $target from inside"
        SECONDS=0
        inspect() { podman image inspect --format "{{json $1}}" "$ref"; }
        health=null
        [[ $target == serve ]] && health=$(inspect .Config.Healthcheck.Test)
        iid=$(mktemp)
        "${build[@]}" --no-cache --iidfile "$iid" -f docker/check.Dockerfile \
            --build-arg IMAGE="$ref" --build-arg TARGET="$target" \
            --build-arg IMAGE_ENTRYPOINT="$(inspect .Config.Entrypoint)" \
            --build-arg IMAGE_CMD="$(inspect .Config.Cmd)" \
            --build-arg IMAGE_HEALTHCHECK="$health" docker
        podman rmi -f "$(cat "$iid")" >/dev/null
        rm -f "$iid"
        checked="${SECONDS}s"
    fi
    size=$(podman image inspect --format '{{.Size}}' "$ref")
    report+=("$(printf '%-6s %-45s %6.2f GB  build %5ss  check %s' "$target" "$ref" \
        "$(awk "BEGIN {print $size / 1e9}")" "$built" "$checked")")
done

if $push; then
    [[ $base == "$standin" ]] &&
        echo "!! pushing images built on the debootstrap stand-in base (no registry here)" >&2
    for ref in "${refs[@]}"; do
        echo "== pushing $ref"
        digest=$(mktemp)
        podman push --digestfile "$digest" "$ref"
        # What to pin in pipelines and manifests (--image): a tag can move, a digest cannot.
        report+=("pushed ${ref%:*}@$(cat "$digest")")
        rm -f "$digest"
    done
fi

echo "== images"
printf '%s\n' "${report[@]}"

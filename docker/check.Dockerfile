# Checks an image from inside: built FROM it, so every RUN runs as the image's own user in
# its own environment. scripts/build-images.sh builds this with docker/ as the context and
# passes the image's CMD, ENTRYPOINT and HEALTHCHECK (podman image inspect) as arguments.
ARG IMAGE
FROM ${IMAGE}
ARG TARGET=train
ARG IMAGE_ENTRYPOINT=null
ARG IMAGE_CMD=null
ARG IMAGE_HEALTHCHECK=null
COPY check_image.py /opt/ihl-check/check_image.py
RUN python3 /opt/ihl-check/check_image.py user
RUN python3 /opt/ihl-check/check_image.py cli
RUN python3 /opt/ihl-check/check_image.py imports
RUN python3 /opt/ihl-check/check_image.py kfp
RUN python3 /opt/ihl-check/check_image.py clean
RUN python3 /opt/ihl-check/check_image.py predict
RUN python3 /opt/ihl-check/check_image.py export
RUN if [ "$TARGET" = serve ]; then python3 /opt/ihl-check/check_image.py serve; fi

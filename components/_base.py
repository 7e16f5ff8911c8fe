"""The decorator every ihl component shares: the project image, nothing installed per pod.

The image already holds ihl and kfp, so ``install_kfp_package=False`` and no
``packages_to_install`` keep each pod from running pip (which would slow every
task and fail in an image without pip). The image named here is only the
compiled default; the pipeline sets each task's image from its ``image``
parameter.
"""

from functools import partial

from kfp import dsl

from ihl.edge.container_images import image

ihl_component = partial(
    dsl.component, base_image=image("train"), install_kfp_package=False, packages_to_install=[]
)

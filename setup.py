"""Package discovery for setuptools (everything else is in pyproject.toml).

pyproject.toml cannot both discover packages and map folders outside the package
into it, so the list is built here: every ``lightning_gapsl`` subpackage on disk,
plus the top-level ``callbacks/`` installed as ``lightning_gapsl.callbacks`` and the
top-level ``conf/`` shipped as ``lightning_gapsl/conf`` (Hydra's configuration).
"""

from setuptools import find_packages, setup

MAPPED = {"lightning_gapsl.callbacks": "callbacks", "lightning_gapsl.conf": "conf"}

setup(
    packages=[*find_packages(include=["lightning_gapsl", "lightning_gapsl.*"]), *MAPPED],
    package_dir=MAPPED,
)

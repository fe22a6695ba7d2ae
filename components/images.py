"""Container images of the pipeline components.

One pinned environment, one image (as TFX does): every component runs in the component image
built from ``images/components.Dockerfile``. Override the registry/tag when compiling with
``mlops compile --image REGISTRY/NAME:TAG`` (or ``mlops submit --image ...``), which rewrites the
image of every step in the compiled YAML.
"""

COMPONENT_IMAGE = "ghcr.io/flight-delay-mlops/components:0.1.0"
SERVING_IMAGE = "ghcr.io/flight-delay-mlops/serving:0.1.0"

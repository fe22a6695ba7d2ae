"""KFP component: stop the run when the data failed validation.

validate never raises, so its statistics, anomalies and report always reach the UI; this gate
then fails the run with the verdict's reasons, before any transform or training is spent on a bad
span. Push reads the verdict too, so a run with ``stop_on_invalid_data=False`` still never
promotes a model trained on bad data.
"""

from kfp import dsl
from kfp.dsl import Artifact, Input

from components.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def validation_gate_op(verdict: Input[Artifact], stop_on_invalid_data: bool) -> bool:
    """Return the verdict; raise with its anomalies when it failed and stopping is asked for."""
    from pathlib import Path

    from components.gate.core import check_verdict

    return check_verdict(Path(verdict.path), stop_on_invalid_data)

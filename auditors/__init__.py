from . import privacy  # noqa: F401 - registers the privacy auditors
from . import fidelity, utility  # noqa: F401 - registers the fidelity and utility auditors

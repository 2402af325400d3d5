"""Patient-level differential privacy for every generator, with Opacus (see docs/differential-privacy.md).

    account = open_account(DPConfig(epsilon=3.0), n_patients)    # settings checked, releases' noise fixed
    run_training(..., privacy=account, epochs=E)                  # DP-SGD over patients; the ledger in the log
"""
from .accounting import calibrate_noise, epsilon_for, epsilons
from .engine import PrivacyAccount, PrivacySettingsError, PrivateTraining, default_delta, open_account
from .ledger import build_ledger, no_dp_ledger
from .validate import DPIncompatibleError, dp_problems, require_dp_compatible

__all__ = ["PrivacyAccount", "PrivacySettingsError", "PrivateTraining", "DPIncompatibleError", "build_ledger",
           "calibrate_noise", "default_delta", "dp_problems", "epsilon_for", "epsilons", "no_dp_ledger",
           "open_account", "require_dp_compatible"]

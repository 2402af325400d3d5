"""The privacy ledger written to `model_card.json` under "privacy".

    {"dp": true, "unit": "patient", "epsilon", "delta", "accountant", "noise_multiplier", "max_grad_norm",
     "sample_rate", "steps", "epochs", "secure_mode", "epsilon_prv", "epsilon_rdp", ...}

`epsilon` is the larger of the PRV and RDP accountants' epsilons for the *whole* history actually spent (the DP-SGD
steps taken plus every statistic released from all patients, such as the mask model's), and it is the one the gate
reads. A model trained without DP says so: {"dp": false, "unit": "patient"}.
"""
from __future__ import annotations

from .accounting import History, epsilons

# Why the patient is the unit of privacy, stated with every DP model.
PATIENT_LEVEL_ARGUMENT = (
    "Each DP-SGD step Poisson-samples PATIENTS (each independently, with probability sample_rate) and takes the "
    "gradient of the mean loss over a few of each sampled patient's slices as that patient's single per-sample "
    "gradient, clipped once to max_grad_norm; adding or removing one patient therefore changes at most one clipped "
    "term of each noisy sum, so the subsampled Gaussian mechanism's guarantee holds per patient, not per slice. "
    "Statistics released from all patients (mask model, vendor statistics) clip each patient's whole contribution "
    "and are composed into the same accountant history.")


# What the model folder holds that the guarantee does not cover, treated as public (as Opacus treats the dataset
# size), so that whoever publishes a card can judge it.
OUTSIDE_THE_GUARANTEE = (
    "the number of training patients (sample rate and delta depend on it)",
    "the vendor names (the cohort's schema)",
    "model_card training_data: the sha256 of the training subject ids (it confirms a guessed exact training set), "
    "the slice count and the patients per vendor; drop them from a card published beyond the data holder",
)


def no_dp_ledger() -> dict:
    return {"dp": False, "unit": "patient"}


def round_sig(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else float(f"{value:.{digits}g}")


def build_ledger(*, history: History, delta: float, target_epsilon: float, accountant: str,
                 binding_accountant: str, noise_multiplier: float,
                 max_grad_norm: float, sample_rate: float, steps: int, epochs: float, secure_mode: bool,
                 n_patients: int, slices_per_patient: int, releases: list[dict], grad_sample_mode: str,
                 notes: list[str] = ()) -> dict:
    """The ledger for what was actually spent: `history` holds every Gaussian mechanism run, in order."""
    import opacus

    eps = epsilons(history, delta)
    ledger = {
        "dp": True,
        "unit": "patient",
        "epsilon": round_sig(eps.worst),
        "delta": delta,
        "target_epsilon": target_epsilon,
        "accountant": accountant,  # the one Opacus tracked during training
        "binding_accountant": binding_accountant,  # the one whose epsilon the noise was calibrated to
        "epsilon_prv": round_sig(eps.prv),
        "epsilon_rdp": round_sig(eps.rdp),
        "noise_multiplier": round_sig(noise_multiplier),
        "max_grad_norm": max_grad_norm,
        "sample_rate": sample_rate,
        "steps": steps,
        "epochs": round(epochs, 4),
        "secure_mode": secure_mode,
        "n_patients": n_patients,
        "slices_per_patient": slices_per_patient,
        "grad_sample_mode": grad_sample_mode,
        "releases": releases,
        "history": [[float(s), float(q), int(n)] for s, q, n in history],
        "argument": PATIENT_LEVEL_ARGUMENT,
        "outside_the_guarantee": list(OUTSIDE_THE_GUARANTEE),
        "opacus": opacus.__version__,
    }
    if eps.prv_error:
        ledger["prv_error"] = eps.prv_error
    if notes:
        ledger["notes"] = list(notes)
    return ledger

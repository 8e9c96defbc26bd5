"""What the ipt-cautions card says (the spec 7.2, 7.3): each caution that applies once,
with its own evidence; the ref-92 caveat once, beside the predictors and never beside the CHD
trial; an evidence line citing only the cautions shown."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from .conftest import Json

REQUESTS = Path(__file__).resolve().parent.parent / "fhir_fixtures" / "requests"


def _card(client: TestClient, case: str) -> Json:
    body = json.loads((REQUESTS / f"{case}.json").read_text())
    cards = client.post(f"/cds-services/ipt-{body['hook']}", json=body).json()["cards"]
    (card,) = [c for c in cards if c["source"]["topic"]["code"] == "ipt-cautions"]
    assert len(card["summary"]) < 140
    found: Json = card
    return found


def _evidence(card: Json) -> str:
    detail: str = card["detail"]
    return detail.rsplit("**Evidence:**", 1)[1]


def test_chd_alone_cites_its_trial_without_the_predictor_caveat(client: TestClient) -> None:
    card = _card(client, "in-chd-ischaemic-heart-disease")
    assert card["summary"].startswith("IPT caution, coronary heart disease:")
    assert "284 patients" in card["detail"]
    assert "(I25.10)" in card["detail"]
    assert "92" not in card["detail"]
    assert _evidence(card).strip().endswith("ref 53.")


def test_three_cautions_one_card_one_caveat(client: TestClient) -> None:
    card = _card(client, "in-cautions-anxiety-chd-borderline")
    assert card["summary"] == "IPT cautions: coronary heart disease; anxiety; personality disorder"
    detail = card["detail"]
    chd = next(line for line in detail.splitlines() if "Coronary heart disease" in line)
    assert "92" not in chd
    assert detail.count("ref 92") == 1
    assert "anxiety and personality disorder included" in detail
    # Both readings of anxiety: consistent (refs 85, 86) and weak for one patient (ref 92).
    assert "consistently" in detail
    assert "OR 2.0, 95% CI 1.1\u20133.6" in detail
    assert "43% against 68%" in detail
    assert "no avoidant or obsessive-compulsive type is recorded" in detail
    assert "refs 53, 85, 86, 87, 92, 99." in _evidence(card)
    assert "67" not in _evidence(card)


def test_a_recorded_trait_is_named(client: TestClient) -> None:
    avoidant = _card(client, "in-personality-avoidant")
    assert "avoidant traits did better with CBT" in avoidant["summary"]
    assert "avoidant traits are recorded" in avoidant["detail"]
    compulsive = _card(client, "in-personality-obsessive-compulsive-select")
    assert "obsessive-compulsive traits did better with IPT" in compulsive["summary"]


def test_age_60_with_an_antidepressant_cites_the_escitalopram_trial(client: TestClient) -> None:
    card = _card(client, "in-cautions-age-60-sertraline")
    assert card["summary"].startswith("IPT caution, age 60 with an antidepressant:")
    assert "Age 60, antidepressant current" in card["detail"]
    assert "58% with IPT, 45% with care management" in card["detail"]
    assert _evidence(card).strip().endswith("section Older patients, ref 67.")
    drafted = _card(client, "in-cautions-age-64-sertraline-drafted-select")
    assert "Age 64, antidepressant drafted" in drafted["detail"]


def test_suicidal_behaviour_history_is_named_with_its_date(client: TestClient) -> None:
    card = _card(client, "in-cautions-suicidal-behaviour-history")
    assert card["summary"].startswith("IPT caution, past suicidal ideation or behaviour:")
    assert "(Z91.51), recorded 20" in card["detail"]
    assert "not an all-clear" in card["detail"]
    assert "standard of care" in _evidence(card)
    attempt = _card(client, "in-cautions-old-suicide-attempt-select")
    assert "(T14.91XA), recorded 20" in attempt["detail"]


def test_every_caution_fits_one_summary(client: TestClient) -> None:
    card = _card(client, "in-cautions-all-five")
    assert card["summary"] == (
        "IPT cautions: past suicidal ideation or behaviour; coronary heart disease; "
        "age 67 with an antidepressant; anxiety; personality disorder"
    )
    assert "refs 53, 67, 85, 86, 87, 92, 99." in _evidence(card)

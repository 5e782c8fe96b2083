"""nnInteractive: the adapter's geometry round trip through a prompt-echo session, and the session protocol."""

from __future__ import annotations

import numpy as np
import pytest
from echo import SCANS, assert_centred, assert_on_blob, ball, blob_world, box_prompt, echo_case, point_prompt

from umd_dataset.errors import ModelUnavailableError, PromptError
from umd_dataset.evaluation.adapters.nninteractive import NNInteractiveModel
from umd_dataset.evaluation.prompts import Prompt
from umd_dataset.io.geometry import to_world


class EchoSession:
    """nnInteractive's session contract (set_image deletes the buffer; points in the array's order;
    half-open boxes), answering with a ball around each positive point or the box centre."""

    def __init__(self, radius: float = 4.0) -> None:
        self.radius, self.image, self.buffer, self.calls = radius, None, None, []

    def set_image(self, image, image_properties=None):
        assert image.ndim == 4 and image.shape[0] == 1
        self.image, self.buffer = np.asarray(image[0], dtype=np.float32), None  # the real session deletes its buffer here
        self.calls.append("set_image")

    def set_target_buffer(self, buffer):
        assert buffer.shape == self.image.shape and buffer.ndim == 3
        self.buffer = buffer

    def reset_interactions(self):
        self.buffer[...] = 0
        self.calls.append("reset")

    def add_point_interaction(self, coordinates, include_interaction, run_prediction=True):
        assert self.buffer is not None, "interaction before set_target_buffer"
        if include_interaction:
            assert_on_blob(self.image, coordinates, "nnInteractive point")
            self.buffer[ball(self.image.shape, coordinates, self.radius)] = 1
        self.calls.append(("point", tuple(coordinates), include_interaction, run_prediction))

    def add_bbox_interaction(self, bbox_coords, include_interaction, run_prediction=True):
        sizes = [hi - lo for lo, hi in bbox_coords]
        assert min(sizes) >= 1
        centre = [(lo + hi - 1) / 2 for lo, hi in bbox_coords]  # half-open bounds
        self.buffer[ball(self.image.shape, centre, self.radius)] = 1
        self.calls.append(("box", [list(b) for b in bbox_coords]))


@pytest.mark.parametrize("scan", list(SCANS))
def test_point_mask_is_centred_on_the_click_in_world_space(scan):
    case = echo_case(scan)
    session = EchoSession()
    prompt = point_prompt(case)
    mask = NNInteractiveModel(session=session)(case, prompt)
    assert mask.dtype == bool
    assert_centred(mask, case, to_world(case.affine, prompt.points[0]), f"nnInteractive on {scan}")
    # the click reaches the session in (z, y, x): the order of sitk.GetArrayFromImage
    assert session.calls[-1][1] == tuple(reversed(prompt.points[0]))


@pytest.mark.parametrize("scan", ["lps", "oblique"])
def test_box_becomes_a_half_open_2d_box_on_its_middle_axial_slice(scan):
    case = echo_case(scan)
    session = EchoSession()
    prompt = box_prompt(case)
    mask = NNInteractiveModel(session=session)(case, prompt)
    box = session.calls[-1][1]
    low, high = prompt.box
    assert [b[1] - b[0] for b in box].count(1) == 1  # one axis one voxel thick: a 2D box
    assert box[1] == [low[1], high[1] + 1]  # inclusive corners -> half-open, in (z, y, x)
    assert_centred(mask, case, blob_world(case), f"nnInteractive box on {scan}")
    three_d = EchoSession()
    NNInteractiveModel(session=three_d, box="3d")(case, prompt)
    assert three_d.calls[-1][1] == [[low[2], high[2] + 1], [low[1], high[1] + 1], [low[0], high[0] + 1]]


def test_one_image_per_scan_a_reset_per_organ_and_corrective_clicks_added_to_the_running_session():
    case = echo_case("lps", organs=("liver", "spleen"))
    session = EchoSession()
    model = NNInteractiveModel(session=session)
    first = point_prompt(case)
    model(case, first)
    model(case, Prompt("point", "spleen", 2, first.points, (1,)))
    assert session.calls.count("set_image") == 1 and session.calls.count("reset") == 2
    corrected = first.with_click((1, 1, 1), 0, 1)
    model(case, first)
    calls = len(session.calls)
    model(case, corrected)
    assert session.calls[calls:] == [("point", (1, 1, 1), False, True)]  # only the new click, on the same session


def test_prompts_it_cannot_take_and_missing_weights_say_what_to_do(monkeypatch):
    case = echo_case("lps")
    with pytest.raises(PromptError, match="point, points, box"):
        NNInteractiveModel(session=EchoSession())(case, Prompt("text", "liver", 1, text="liver"))
    monkeypatch.delenv("UMD_NNINTERACTIVE_WEIGHTS", raising=False)
    with pytest.raises(ModelUnavailableError, match=r"umd-dataset\[nninteractive\]|UMD_NNINTERACTIVE_WEIGHTS"):
        NNInteractiveModel()(case, point_prompt(case))

"""Review before decode, in the window: the form's "Review before decode" checkbox and the bar
under the preview that shows while a job waits at review, with Decode and Discard.

The job waits on the GPU thread (GpuService.decide); here the buttons only answer it through the
queue model, so the window stays live and Cancel still works while the user looks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QPushButton, QWidget

if TYPE_CHECKING:
    from PySide6.QtWidgets import QTabWidget

    from .library import ModelEntry
    from .player import VideoPlayer
    from .service import PreviewFrames
    from .viewmodels import FormModel, FormState, QueueModel

REVIEW_TIP = (
    "After denoising, wait on the last preview: Decode it with the full VAE, or Discard it "
    "(nothing is written). The queue waits behind it meanwhile."
)


def review_checkbox(form: FormModel) -> QCheckBox:
    """The form's "Review before decode" checkbox, bound both ways to ``form.state.review``."""
    check = QCheckBox("Review before decode")
    check.setToolTip(REVIEW_TIP)
    check.setChecked(form.state.review)
    check.toggled.connect(lambda on: form.update(review=on))

    def show(state: FormState) -> None:
        if check.isChecked() != state.review:
            check.blockSignals(True)
            check.setChecked(state.review)
            check.blockSignals(False)

    form.changed.connect(show)
    return check


SINGLE_WINDOW_TIP = (
    "Review before decode is for single-window videos: this duration runs several windows, "
    "each decoded before the next one starts. Shorten it to one window to review."
)
CONTINUE_TIP = (
    "Review before decode is not for continuing a video with this model: its windows continue "
    "from the video's decoded frames, each decoded before the next one starts. (SkyReels-V2 "
    "Diffusion Forcing models decode once at the end and take a review.)"
)
REVIEW_DROPPED = (
    "Review before decode is off for this job: continuing a video with this model runs sliding "
    "windows, each decoded before the next one starts"
)


def review_refusal(state: FormState, entry: ModelEntry | None) -> str:
    """Why run.prepare would refuse a review of the form's job (the checkbox's tooltip then), ""
    when it takes one: more than one sliding window, or a video continued through sliding windows
    (long_video.check plans windows for any ``extend``). SkyReels-V2 DF models decode once at the
    end and take a review at any length; refused window settings say nothing here (the job is
    refused for them)."""
    from .long_video_form import forcing_of, windows_for

    variant = entry.variant if entry is not None else ""
    if forcing_of(variant) is not None:
        return ""
    windows = windows_for(
        variant,
        task=state.task,
        frames=state.frames,
        fps=state.fps,
        lv=state.long_video,
        image=state.image,
        last_image=state.last_image,
    )
    if windows is None:
        return ""
    if windows > 1:
        return SINGLE_WINDOW_TIP
    return CONTINUE_TIP if state.long_video.extend else ""


def fit_review_check(check: QCheckBox, state: FormState, entry: ModelEntry | None) -> None:
    """The checkbox for the form's duration: disabled, with the reason as its tooltip, when the
    job would be refused a review (:func:`review_refusal`); left enabled while ticked, so it can
    be unticked (Add to queue then marks it)."""
    refusal = review_refusal(state, entry)
    check.setEnabled(not refusal or state.review)
    if not check.property("invalid"):  # a refused job's message stays until it is fixed
        check.setToolTip(refusal or REVIEW_TIP)


def drop_refused_review(form: FormModel) -> str:
    """A job made from a history entry keeps its "Review before decode" where the run takes one;
    where it would be refused (a video continued through sliding windows) the flag is cleared and
    the note to show is returned ("" when nothing changed)."""
    if form.state.review and review_refusal(form.state, form.entry):
        form.update(review=False)
        return REVIEW_DROPPED
    return ""


class ReviewBar(QWidget):
    """Shown while a job waits at review: what the preview shows, and Decode / Discard."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.job_id: str | None = None  # the job the bar answers for
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.decode_button = QPushButton("Decode")
        self.decode_button.setToolTip("Decode the video with the full VAE and save it")
        self.discard_button = QPushButton("Discard")
        self.discard_button.setToolTip("Drop this video: nothing is decoded or written")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.label, 1)
        lay.addWidget(self.decode_button)
        lay.addWidget(self.discard_button)
        self.setVisible(False)

    def bind(
        self,
        queue: QueueModel,
        player: VideoPlayer,
        tabs: QTabWidget | None = None,
        stage_label: QLabel | None = None,
    ) -> None:
        """Show on ``queue.review`` (the preview goes to ``player``), answer with the buttons,
        hide when the job ends however it ends."""
        self._queue, self._player, self._tabs, self._stage = queue, player, tabs, stage_label
        queue.review.connect(self._on_review)
        queue.finished.connect(lambda job_id, _r: self._ended(job_id))
        queue.failed.connect(lambda job_id, _e: self._ended(job_id))
        queue.cancelled.connect(self._ended)
        queue.discarded.connect(self._on_discarded)
        self.decode_button.clicked.connect(self.decode)
        self.discard_button.clicked.connect(self.discard)

    def _on_review(self, job_id: str, preview: PreviewFrames) -> None:
        self.job_id = job_id
        self._player.set_frames(preview.frames, fps=preview.fps)
        if self._tabs is not None:
            self._tabs.setCurrentWidget(self._player)
        how = (
            "tiny-VAE preview"
            if preview.decoder == "tiny-vae"
            else "latent preview: colours and detail are rough"
        )
        self.label.setText(
            f"Review: the denoised video after step {preview.step}/{preview.total} ({how}). "
            "Decode it with the full VAE, or discard it?"
        )
        for b in (self.decode_button, self.discard_button):
            b.setEnabled(True)
        self.setVisible(True)
        if self._stage is not None:
            self._stage.setText("Waiting for your review: Decode or Discard")

    def decode(self) -> None:
        self._answer(decode=True)

    def discard(self) -> None:
        self._answer(decode=False)

    def _answer(self, *, decode: bool) -> None:
        job_id, self.job_id = self.job_id, None
        self.setVisible(False)
        if job_id is None:
            return
        if decode:
            self._queue.decode(job_id)
            if self._stage is not None:
                self._stage.setText("Decoding video…")
        else:
            self._queue.discard(job_id)

    def _on_discarded(self, job_id: str) -> None:
        self._ended(job_id)
        if self._stage is not None:
            self._stage.setText("Discarded — nothing was written")

    def _ended(self, job_id: str) -> None:
        if job_id == self.job_id:
            self.job_id = None
            self.setVisible(False)

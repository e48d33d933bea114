"""A small frame player: the live preview (latent frames, looping) and the finished video (loop,
scrub, frame step). Frames are QImages; pixmaps are made here, on the GUI thread."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)


class FrameView(QLabel):
    """Shows one QImage scaled to fit, keeping its aspect ratio."""

    def __init__(self, placeholder: str = "") -> None:
        super().__init__(placeholder)
        self.placeholder = placeholder
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)  # a click on the video: Space plays it
        self.setMinimumSize(QSize(240, 135))  # fits beside the form on a 1024×600 screen
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setStyleSheet("background: #111; color: #888;")
        self._image: QImage | None = None
        self.smooth = True

    def set_image(self, image: QImage | None) -> None:
        self._image = image
        self._redraw()

    def image(self) -> QImage | None:
        return self._image

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._redraw()

    def _redraw(self) -> None:
        if self._image is None or self._image.isNull():
            self.setText(self.placeholder)  # no picture: what will appear here
            return
        mode = (
            Qt.TransformationMode.SmoothTransformation
            if self.smooth
            else Qt.TransformationMode.FastTransformation
        )
        pm = QPixmap.fromImage(self._image).scaled(
            self.size(), Qt.AspectRatioMode.KeepAspectRatio, mode
        )
        self.setPixmap(pm)


class VideoPlayer(QWidget):
    frame_changed = Signal(int)

    def __init__(self, placeholder: str = "No video yet") -> None:
        super().__init__()
        self.frames: tuple[QImage, ...] = ()
        self.fps = 16
        self.index = 0
        self.view = FrameView(placeholder)
        self.play_button = QToolButton(text="▶", toolTip="Play / pause")
        self.prev_button = QToolButton(text="◀|", toolTip="Previous frame")
        self.next_button = QToolButton(text="|▶", toolTip="Next frame")
        self.loop = QCheckBox("Loop")
        self.loop.setChecked(True)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setEnabled(False)
        self.counter = QLabel("0 / 0")
        self.timer = QTimer(self)
        self.timer.timeout.connect(self._tick)

        controls = QHBoxLayout()
        for w in (self.prev_button, self.play_button, self.next_button):
            controls.addWidget(w)
        controls.addWidget(self.slider, 1)
        controls.addWidget(self.counter)
        controls.addWidget(self.loop)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.view, 1)
        lay.addLayout(controls)

        self.play_button.clicked.connect(self.toggle)
        self.prev_button.clicked.connect(lambda: self.step(-1))
        self.next_button.clicked.connect(lambda: self.step(1))
        self.slider.valueChanged.connect(self.seek)

    def set_frames(self, frames: tuple[QImage, ...], fps: int, *, play: bool = True) -> None:
        self.frames = tuple(frames)
        self.fps = max(1, fps)
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, len(self.frames) - 1))
        self.slider.setEnabled(len(self.frames) > 1)
        self.slider.blockSignals(False)
        self.seek(min(self.index, len(self.frames) - 1) if self.frames else 0)
        if play and len(self.frames) > 1:
            self.play()
        elif not self.frames:
            self.pause()

    def clear(self) -> None:
        self.pause()
        self.frames = ()
        self.index = 0
        self.view.set_image(None)
        self.counter.setText("0 / 0")

    def play(self) -> None:
        if len(self.frames) > 1:
            self.timer.start(round(1000 / self.fps))
            self.play_button.setText("❚❚")

    def pause(self) -> None:
        self.timer.stop()
        self.play_button.setText("▶")

    def toggle(self) -> None:
        self.pause() if self.timer.isActive() else self.play()

    @property
    def playing(self) -> bool:
        return self.timer.isActive()

    def step(self, delta: int) -> None:
        self.pause()
        if self.frames:
            self.seek((self.index + delta) % len(self.frames))

    def seek(self, index: int) -> None:
        if not self.frames:
            return
        self.index = max(0, min(index, len(self.frames) - 1))
        self.view.set_image(self.frames[self.index])
        self.slider.blockSignals(True)
        self.slider.setValue(self.index)
        self.slider.blockSignals(False)
        self.counter.setText(f"{self.index + 1} / {len(self.frames)}")
        self.frame_changed.emit(self.index)

    def _tick(self) -> None:
        if self.index + 1 >= len(self.frames):
            if not self.loop.isChecked():
                self.pause()
                return
            self.seek(0)
        else:
            self.seek(self.index + 1)

"""The PySide6 desktop app (``wan-desktop`` with no arguments).

app.py        entry point: PySide6 / display checks before Qt loads, rotating log file
desktop.py    composition root: GpuService on its QThread, QueueModel, MainWindow
service.py    GpuService: the one GPU thread; jobs through run.prepare/execute, engine builds too
engine_folders.py  engine folders for the dialog and the "Run on" menu, the export job (no Qt)
viewmodels.py FormModel (the next job's settings), QueueModel (queue + history, persisted)
store.py      Job / HistoryEntry and their JSON files; settings.py, paths.py: the data dir
library.py    model picker data (detect/inspect); preview.py: latent→RGB live preview
main_window.py, player.py, widgets.py, first_run.py, engines_dialog.py, settings_dialog.py: widgets
"""

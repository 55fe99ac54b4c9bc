"""Models > Predict and flag…'s dialog: its defaults are inference.predict_flag's, and each choice lands in the
options the window runs."""

from __future__ import annotations

from inference.predict_flag import PredictFlagOptions


def test_the_dialog_answers_with_predict_flag_options(qtbot) -> None:
    from widgets.predict_dialog import PredictDialog

    dialog = PredictDialog()
    qtbot.addWidget(dialog)
    assert dialog.options() == PredictFlagOptions()  # teacher and student, saliency clicks, no mirrors, CPU
    dialog.models.setCurrentIndex(dialog.models.findData("student"))
    dialog.prompts.setCurrentIndex(dialog.prompts.findData("teacher"))
    dialog.views.setCurrentIndex(dialog.views.findData(4))
    dialog.device.setCurrentIndex(dialog.device.findData("cuda"))
    assert dialog.options() == PredictFlagOptions(models="student", prompts="teacher", teacher_flip_views=4,
                                                  device="cuda")
    assert [dialog.views.itemData(i) for i in range(dialog.views.count())] == [1, 2, 4]

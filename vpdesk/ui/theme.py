"""The console's look: a calm dark palette, one stylesheet, readable fonts.

Made for a ten-hour shift: dark blue-grey surfaces (never pure black), off-white text,
muted status colours that stay readable without glowing. Widgets that paint themselves
(lamps, the PTT button, the level meter) take their colours from `COLORS`, so the whole
console changes together.

GUI thread only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QApplication

logger = logging.getLogger(__name__)

BASE_POINT_SIZE = 11
# The first family the system has wins; the rest keep Linux, Windows and macOS readable.
FONT_FAMILIES = ["Segoe UI", "Noto Sans", "DejaVu Sans", "Helvetica Neue", "Arial", "Sans Serif"]


@dataclass(frozen=True)
class ThemeColors:
    window: str = "#1b2027"  # the window behind everything
    surface: str = "#222931"  # panels, rows
    surface_alt: str = "#283039"  # hovered rows, inputs
    surface_sunken: str = "#181c22"  # scroll areas, meter troughs
    border: str = "#343d48"
    border_strong: str = "#46515e"
    text: str = "#e3e7ec"
    text_dim: str = "#98a3af"
    text_faint: str = "#6b7682"
    accent: str = "#4f8fd0"  # focus, selection, the transmit target
    slider_fill: str = "#6d8299"  # volume fill: calm, so 50 sliders do not shout
    target_row: str = "#233447"  # the transmit target's row
    onair_row: str = "#20302a"  # a row whose channel someone is talking on
    green: str = "#4cb36b"  # someone else is talking; connected
    amber: str = "#e0a33a"  # our own transmission; requesting; connecting
    red: str = "#d9534f"  # transmitting; muted; failed
    orange: str = "#e8803a"  # busy / denied
    ptt_idle: str = "#4a5e75"  # the PTT button at rest (blue-grey)
    lamp_off: str = "#2f3740"
    control_base: str = "#2e3742"  # check box / radio button wells


COLORS = ThemeColors()


def base_font(point_size: float = BASE_POINT_SIZE, *, bold: bool = False) -> QFont:
    font = QFont()
    font.setFamilies(FONT_FAMILIES)
    font.setPointSizeF(point_size)
    font.setBold(bold)
    return font


def _palette() -> QPalette:
    c = COLORS
    pal = QPalette()
    roles = {
        QPalette.ColorRole.Window: c.window,
        QPalette.ColorRole.WindowText: c.text,
        # Base is what Fusion fills check boxes and radio buttons with: it must stand out
        # from the window. Text fields have their own background in the stylesheet.
        QPalette.ColorRole.Base: c.control_base,
        QPalette.ColorRole.AlternateBase: c.surface,
        QPalette.ColorRole.ToolTipBase: c.surface_alt,
        QPalette.ColorRole.ToolTipText: c.text,
        QPalette.ColorRole.PlaceholderText: c.text_faint,
        QPalette.ColorRole.Text: c.text,
        QPalette.ColorRole.Button: c.surface_alt,
        QPalette.ColorRole.ButtonText: c.text,
        QPalette.ColorRole.BrightText: "#ffffff",
        QPalette.ColorRole.Highlight: c.accent,
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.Link: c.accent,
        QPalette.ColorRole.Light: c.border_strong,
        QPalette.ColorRole.Midlight: c.border,
        QPalette.ColorRole.Mid: c.border,
        QPalette.ColorRole.Dark: c.surface_sunken,
        QPalette.ColorRole.Shadow: "#0e1114",
    }
    for role, colour in roles.items():
        pal.setColor(role, QColor(colour))
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        pal.setColor(QPalette.ColorGroup.Disabled, role, QColor(c.text_faint))
    return pal


def stylesheet() -> str:
    c = COLORS
    return f"""
QWidget {{ color: {c.text}; }}
QMainWindow, QDialog {{ background: {c.window}; }}
QToolTip {{ background: {c.surface_alt}; color: {c.text}; border: 1px solid {c.border_strong}; padding: 4px; }}

QMenuBar {{ background: {c.window}; border-bottom: 1px solid {c.border}; padding: 2px; }}
QMenuBar::item {{ padding: 4px 10px; background: transparent; border-radius: 4px; }}
QMenuBar::item:selected {{ background: {c.surface_alt}; }}
QMenu {{ background: {c.surface}; border: 1px solid {c.border_strong}; padding: 4px; }}
QMenu::item {{ padding: 6px 24px 6px 16px; border-radius: 4px; }}
QMenu::item:selected {{ background: {c.accent}; color: #ffffff; }}
QMenu::separator {{ height: 1px; background: {c.border}; margin: 4px 8px; }}

QStatusBar {{ background: {c.window}; border-top: 1px solid {c.border}; color: {c.text_dim}; }}
QStatusBar::item {{ border: none; }}
QLabel#AudioProblem {{ color: {c.amber}; font-weight: bold; padding: 0 8px; }}

QSplitter::handle {{ background: {c.border}; }}
QSplitter::handle:horizontal {{ width: 1px; }}

QScrollArea {{ border: none; background: {c.surface_sunken}; }}
QScrollBar:vertical {{ background: {c.surface_sunken}; width: 12px; margin: 0; }}
QScrollBar::handle:vertical {{ background: {c.border_strong}; min-height: 32px; border-radius: 5px; margin: 2px; }}
QScrollBar::handle:vertical:hover {{ background: {c.text_faint}; }}
QScrollBar::add-line, QScrollBar::sub-line {{ height: 0; width: 0; }}
QScrollBar::add-page, QScrollBar::sub-page {{ background: none; }}

QPushButton {{
    background: {c.surface_alt}; border: 1px solid {c.border_strong}; border-radius: 5px;
    padding: 6px 14px; min-height: 20px;
}}
QPushButton:hover {{ background: #313a45; }}
QPushButton:pressed {{ background: {c.surface_sunken}; }}
QPushButton:focus, QToolButton:focus {{ border: 1px solid {c.accent}; }}
QPushButton:default {{ border: 1px solid {c.accent}; }}
QPushButton:disabled {{ color: {c.text_faint}; }}

QLineEdit, QPlainTextEdit, QComboBox {{
    background: {c.surface_sunken}; border: 1px solid {c.border_strong}; border-radius: 4px;
    padding: 5px 8px; selection-background-color: {c.accent};
}}
QLineEdit:focus, QPlainTextEdit:focus, QComboBox:focus {{ border: 1px solid {c.accent}; }}
QComboBox QAbstractItemView {{ background: {c.surface}; border: 1px solid {c.border_strong};
    selection-background-color: {c.accent}; }}

QGroupBox {{ border: 1px solid {c.border}; border-radius: 6px; margin-top: 14px; padding: 14px 10px 10px 10px; }}
QGroupBox::title {{ subcontrol-origin: margin; left: 10px; padding: 0 4px; color: {c.text_dim};
    font-weight: bold; }}

QSlider::groove:horizontal {{ height: 4px; background: {c.border_strong}; border-radius: 2px; margin: 0 2px; }}
QSlider::sub-page:horizontal {{ height: 4px; background: {c.slider_fill}; border-radius: 2px; margin: 0 2px; }}
QSlider::add-page:horizontal {{ height: 4px; background: {c.border_strong}; border-radius: 2px; margin: 0 2px; }}
QSlider::sub-page:horizontal:disabled, QSlider[muted="true"]::sub-page:horizontal {{ background: {c.text_faint}; }}
QSlider::handle:horizontal {{ background: {c.text}; width: 12px; height: 12px; margin: -4px 0;
    border-radius: 6px; }}
QSlider[muted="true"]::handle:horizontal {{ background: {c.text_dim}; }}
QSlider::handle:horizontal:hover {{ background: #ffffff; }}
QSlider::handle:horizontal:disabled {{ background: {c.text_faint}; }}
QSlider::handle:horizontal:focus {{ background: {c.accent}; border: 2px solid #ffffff; width: 10px; height: 10px;
    margin: -5px 0; border-radius: 7px; }}

QDialogButtonBox {{ dialogbuttonbox-buttons-have-icons: 0; }}
QCheckBox, QRadioButton {{ spacing: 8px; }}

QLabel#ErrorLabel {{ color: {c.red}; font-weight: bold; }}
QLabel#DialogTitle {{ font-size: 15pt; font-weight: bold; }}
QLabel#Hint {{ color: {c.text_dim}; }}

/* Top bar */
QFrame#TopBar {{ background: {c.surface}; border-bottom: 1px solid {c.border}; }}
QLabel#AppTitle {{ font-size: 13pt; font-weight: bold; color: {c.text}; }}
QLabel#ConnectionText {{ font-size: 11pt; }}
QLabel#UserName {{ font-size: 11pt; font-weight: bold; }}
QLabel#UserRole {{ color: {c.text_dim}; background: {c.surface_alt}; border: 1px solid {c.border};
    border-radius: 9px; padding: 1px 8px; }}

/* Channel list */
QFrame#ChannelHeader {{ background: {c.window}; border-bottom: 1px solid {c.border}; }}
QLabel#ColumnTitle {{ color: {c.text_faint}; font-size: 9pt; font-weight: bold; }}
QWidget#ChannelRows {{ background: {c.surface_sunken}; }}
QFrame#ChannelRow {{ background: {c.surface}; border: 1px solid {c.border}; border-left: 4px solid {c.surface};
    border-radius: 4px; }}
QFrame#ChannelRow:hover {{ background: {c.surface_alt}; }}
QFrame#ChannelRow:focus {{ border: 1px solid {c.accent}; border-left: 4px solid {c.accent}; }}
QFrame#ChannelRow[target="true"] {{ background: {c.target_row}; border: 1px solid {c.accent};
    border-left: 4px solid {c.accent}; }}
QFrame#ChannelRow[onair="true"] {{ background: {c.onair_row}; border-left: 4px solid {c.green}; }}
QFrame#ChannelRow[onair="true"][own="true"] {{ border-left: 4px solid {c.amber}; }}
QFrame#ChannelRow[target="true"][onair="true"] {{ background: {c.target_row}; border: 1px solid {c.accent};
    border-left: 4px solid {c.green}; }}
QFrame#ChannelRow[target="true"][onair="true"][own="true"] {{ border-left: 4px solid {c.amber}; }}
QLabel#ChannelName {{ font-size: 11.5pt; font-weight: bold; }}
QLabel#ChannelName[muted="true"] {{ color: {c.text_dim}; }}
QLabel#ChannelTeam {{ color: {c.text_dim}; font-size: 9pt; }}
QLabel#Speaking {{ font-size: 11.5pt; font-weight: bold; color: {c.green}; }}
QLabel#Speaking[own="true"] {{ color: {c.amber}; }}
QLabel#VolumeValue {{ color: {c.text_dim}; font-size: 9.5pt; }}
QToolButton#MuteButton {{ background: transparent; border: 1px solid transparent; border-radius: 4px; }}
QToolButton#MuteButton:hover {{ background: {c.surface_alt}; border: 1px solid {c.border_strong}; }}
QToolButton#MuteButton:checked {{ background: #4a2b2d; border: 1px solid {c.red}; }}
QToolButton#MuteButton:focus {{ border: 1px solid {c.accent}; }}
QToolButton#TxButton {{ background: transparent; color: {c.text_faint}; border: 1px solid {c.border_strong};
    border-radius: 4px; font-weight: bold; font-size: 10pt; }}
QToolButton#TxButton:hover {{ color: {c.text}; border: 1px solid {c.text_dim}; }}
QToolButton#TxButton:checked {{ background: {c.accent}; color: #ffffff; border: 1px solid {c.accent}; }}
QToolButton#TxButton:focus {{ border: 1px solid {c.accent}; }}
QLabel#EmptyList {{ color: {c.text_dim}; font-size: 12pt; }}

/* PTT panel */
QWidget#PttPanel {{ background: {c.window}; }}
QLabel#Caption {{ color: {c.text_faint}; font-size: 9pt; font-weight: bold; }}
QLabel#TargetName {{ font-size: 22pt; font-weight: bold; }}
QLabel#TargetName[none="true"] {{ color: {c.text_faint}; }}
QLabel#TargetTeam {{ color: {c.text_dim}; font-size: 11pt; }}
QLabel#Banner {{ border-radius: 6px; padding: 8px 12px; font-size: 12pt; font-weight: bold;
    background: {c.surface}; color: {c.text_faint}; border: 1px solid {c.border}; }}
QLabel#Banner[kind="speaking"] {{ background: #1f3a2a; color: #9fe0b2; border: 1px solid {c.green}; }}
QLabel#Banner[kind="own"] {{ background: #3d2f1a; color: #f3cf8e; border: 1px solid {c.amber}; }}
QLabel#Banner[kind="denied"] {{ background: #45291b; color: #ffc49c; border: 1px solid {c.orange}; }}
QFrame#TxBox {{ background: {c.surface}; border: 1px solid {c.border}; border-radius: 6px; }}
QFrame#TxBox[live="true"] {{ border: 1px solid {c.red}; }}
QLabel#TxLabel {{ color: {c.text_faint}; font-weight: bold; font-size: 10pt; }}
QLabel#TxLabel[live="true"] {{ color: {c.red}; }}
QLabel#Countdown {{ color: {c.text_dim}; font-size: 11pt; font-weight: bold; }}
QLabel#Countdown[low="true"] {{ color: {c.red}; }}
QLabel#ModeText {{ color: {c.text_dim}; font-size: 11pt; }}
QLabel#KeyCap {{ background: {c.surface_alt}; border: 1px solid {c.border_strong}; border-bottom: 2px solid {c.border_strong};
    border-radius: 4px; padding: 2px 8px; font-weight: bold; }}
"""


def apply_theme(app: QApplication) -> None:
    """Fusion style, the dark palette, the stylesheet and the base font. GUI thread only."""
    app.setStyle("Fusion")
    app.setPalette(_palette())
    app.setFont(base_font())
    app.setStyleSheet(stylesheet())
    logger.debug("theme: applied (font %s)", app.font().family())

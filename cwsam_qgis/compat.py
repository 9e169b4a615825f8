"""QGIS enums and types under the names QGIS 4 gives them, resolved once for QGIS 3.22 to 4.x.

QGIS 3.30 to 3.38 moved many class enums into ``Qgis`` (``QgsProcessing.SourceType`` became
``Qgis.ProcessingSourceType``...) and kept the old names only as Python aliases, which QGIS 4 drops; QGIS
3.22 has only the old names. Everything else in the plugin uses fully scoped names that exist in both
(``Qt.CheckState.Checked``, ``QgsTask.Flag.CanCancel``), checked by tools/check_qt6.py.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from qgis.core import (
    Qgis, QgsEditFormConfig, QgsField, QgsMapLayerProxyModel, QgsProcessing, QgsProcessingParameterDefinition,
    QgsProcessingParameterField, QgsProcessingParameterNumber, QgsRasterFileWriter, QgsWkbTypes,
)
from qgis.PyQt.QtCore import QMetaType, QVariant

T = TypeVar("T")


def _newest(new: Callable[[], T], old: Callable[[], T]) -> T:
    """The QGIS-4 spelling where this QGIS has it, else the QGIS-3.22 one."""
    try:
        return new()
    except AttributeError:
        return old()


# Layer and field filters (Qgis.LayerFilter: QGIS 3.34).
LayerFilter = _newest(lambda: Qgis.LayerFilter, lambda: QgsMapLayerProxyModel.Filter)

# Processing (QGIS 3.36).
NUMBER_INTEGER = _newest(lambda: Qgis.ProcessingNumberParameterType.Integer,
                         lambda: QgsProcessingParameterNumber.Type.Integer)
NUMBER_DOUBLE = _newest(lambda: Qgis.ProcessingNumberParameterType.Double,
                        lambda: QgsProcessingParameterNumber.Type.Double)
SOURCE_POLYGON = _newest(lambda: Qgis.ProcessingSourceType.VectorPolygon,
                         lambda: QgsProcessing.SourceType.TypeVectorPolygon)
FIELD_ANY = _newest(lambda: Qgis.ProcessingFieldParameterDataType.Any,
                    lambda: QgsProcessingParameterField.DataType.Any)
PARAMETER_ADVANCED = _newest(lambda: Qgis.ProcessingParameterFlag.Advanced,
                             lambda: QgsProcessingParameterDefinition.Flag.FlagAdvanced)

# Geometry types (Qgis.GeometryType: QGIS 3.30).
POLYGON_GEOMETRY = _newest(lambda: Qgis.GeometryType.Polygon, lambda: QgsWkbTypes.GeometryType.PolygonGeometry)

# Feature forms (Qgis.AttributeFormSuppression: QGIS 3.32).
FORM_SUPPRESSED = _newest(lambda: Qgis.AttributeFormSuppression.On,
                          lambda: QgsEditFormConfig.FeatureFormSuppress.SuppressOn)

# Raster writer results (Qgis.RasterFileWriterResult: QGIS 3.42).
RASTER_WRITE_OK = _newest(lambda: Qgis.RasterFileWriterResult.Success,
                          lambda: QgsRasterFileWriter.WriterError.NoError)

# QgsField takes QMetaType types from QGIS 3.38 on (QGIS 4: only those), QVariant types before; both number
# the types alike, and QgsField.type() compares equal to QMetaType.Type members in every version.
FIELD_TAKES_METATYPE = Qgis.QGIS_VERSION_INT >= 33800


def new_field(name: str, meta_type: QMetaType.Type) -> QgsField:
    """A QgsField of ``meta_type`` (e.g. ``QMetaType.Type.Int``) in any QGIS version."""
    if FIELD_TAKES_METATYPE:
        return QgsField(name, meta_type)
    return QgsField(name, QVariant.Type(int(meta_type)))  # qt6-compat: QGIS < 3.38 only

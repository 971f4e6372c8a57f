"""De-identification of stored DICOM copies: DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile
with the Retain Longitudinal Temporal Information with Modified Dates option.

``dicognito`` replaces what it knows (every PN, UID, the identifiers, addresses, institution; dates shifted by one
random offset) consistently for one :class:`StudyDeidentifier`, so the images of a study keep their links to each
other but to nothing outside it (the random seed is never stored). The table below removes what the profile marks
X (or Z/X) and dicognito leaves: comments, descriptions, physicians' and operators' details, request attributes,
patient characteristics; then every private attribute, overlay and curve goes and the de-identification attributes
are set. Pixel data is kept as it is: text burned into the pixels cannot be removed (docs/privacy.md).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import dicognito
import pydicom
from dicognito.anonymizer import Anonymizer
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

METHOD = "cadx PS3.15 E Basic Profile"  # DeidentificationMethod is LO: at most 64 characters per value
# PS3.16 CID 7050 De-identification Method
CODES = (("113100", "Basic Application Confidentiality Profile"),
         ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"))

# Annex E Table E.1-1 attributes whose Basic Profile action is X (or allows X), and Z attributes without meaning
# here, that dicognito does not replace. Removed wherever they occur, in sequences too.
REMOVE = frozenset((
    "AcquisitionComments", "AcquisitionContextSequence", "AcquisitionDeviceProcessingDescription",
    "AcquisitionProtocolDescription", "ActualHumanPerformersSequence", "AdditionalPatientHistory", "AdmissionID",
    "AdmittingDiagnosesCodeSequence", "AdmittingDiagnosesDescription", "Allergies", "Arbitrary",
    "AuthorObserverSequence", "BranchOfService", "CassetteID", "CommentsOnThePerformedProcedureStep",
    "ConfidentialityConstraintOnPatientDataDescription", "ContentCreatorIdentificationCodeSequence",
    "ContributionDescription", "CountryOfResidence", "CurrentPatientLocation", "CustodialOrganizationSequence",
    "DataSetTrailingPadding", "DerivationDescription", "DetectorID", "DeviceSerialNumber", "DeviceUID",
    "DigitalSignaturesSequence", "DischargeDiagnosisDescription", "DistributionAddress", "DistributionName",
    "EthnicGroup", "FrameComments", "GantryID", "GeneratorID", "HumanPerformerName", "HumanPerformerOrganization",
    "IconImageSequence", "IdentifyingComments", "ImageComments", "ImagePresentationComments",
    "ImagingServiceRequestComments", "Impressions", "InstitutionAddress", "InstitutionCodeSequence",
    "InstitutionName", "InstitutionalDepartmentName", "InstitutionalDepartmentTypeCodeSequence",
    "InsurancePlanIdentification", "IntendedRecipientsOfResultsIdentificationSequence",
    "InterpretationApproverSequence", "InterpretationAuthor", "InterpretationDiagnosisDescription",
    "InterpretationIDIssuer", "InterpretationRecorder", "InterpretationText", "InterpretationTranscriber",
    "IssuerOfAdmissionID", "IssuerOfPatientID", "IssuerOfServiceEpisodeID", "MedicalAlerts", "MedicalRecordLocator",
    "MilitaryRank", "ModifiedAttributesSequence", "ModifyingDeviceID", "ModifyingDeviceManufacturer",
    "NameOfPhysiciansReadingStudy", "NamesOfIntendedRecipientsOfResults", "Occupation",
    "OperatorIdentificationSequence", "OperatorsName", "OrderCallbackPhoneNumber",
    "OrderCallbackTelecomInformation", "OrderEnteredBy", "OrderEntererLocation", "OriginalAttributesSequence",
    "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "ParticipantSequence", "PatientAddress",
    "PatientAge", "PatientBirthName", "PatientBirthTime", "PatientComments", "PatientInstitutionResidence",
    "PatientInsurancePlanCodeSequence", "PatientMotherBirthName", "PatientPrimaryLanguageCodeSequence",
    "PatientPrimaryLanguageModifierCodeSequence", "PatientReligiousPreference", "PatientSexNeutered", "PatientSize",
    "PatientState", "PatientTelecomInformation", "PatientTelephoneNumbers", "PatientTransportArrangements",
    "PatientWeight", "PerformedLocation", "PerformedProcedureStepDescription", "PerformedProcedureStepID",
    "PerformedStationAETitle", "PerformedStationGeographicLocationCodeSequence", "PerformedStationName",
    "PerformedStationNameCodeSequence", "PerformingPhysicianIdentificationSequence", "PerformingPhysicianName",
    "PersonAddress", "PersonTelecomInformation", "PersonTelephoneNumbers", "PhysicianApprovingInterpretation",
    "PhysiciansOfRecord", "PhysiciansOfRecordIdentificationSequence",
    "PhysiciansReadingStudyIdentificationSequence", "PlateID", "PreMedication", "PregnancyStatus", "ProtocolName",
    "ReasonForStudy", "ReasonForTheImagingServiceRequest", "ReasonForTheRequestedProcedure",
    "ReferencedPatientAliasSequence", "ReferencedPatientPhotoSequence", "ReferencedPatientSequence",
    "ReferringPhysicianAddress", "ReferringPhysicianIdentificationSequence", "ReferringPhysicianTelephoneNumbers",
    "RegionOfResidence", "RequestAttributesSequence", "RequestedContrastAgent", "RequestedProcedureComments",
    "RequestedProcedureDescription", "RequestedProcedureID", "RequestedProcedureLocation", "RequestingPhysician",
    "RequestingService", "ResponsibleOrganization", "ResponsiblePerson", "ResultsComments",
    "ResultsDistributionListSequence", "ResultsIDIssuer", "ScheduledHumanPerformersSequence",
    "ScheduledPatientInstitutionResidence", "ScheduledPerformingPhysicianIdentificationSequence",
    "ScheduledPerformingPhysicianName", "ScheduledProcedureStepDescription", "ScheduledProcedureStepLocation",
    "ScheduledStationAETitle", "ScheduledStationGeographicLocationCodeSequence", "ScheduledStationName",
    "ScheduledStationNameCodeSequence", "ScheduledStudyLocation", "ScheduledStudyLocationAETitle",
    "SeriesDescription", "ServiceEpisodeDescription", "ServiceEpisodeID", "SmokingStatus",
    "SourceApplicationEntityTitle", "SpecialNeeds", "StationName", "StudyComments", "StudyDescription",
    "StudyIDIssuer", "TextComments", "TextString", "TopicAuthor", "TopicKeywords", "TopicSubject", "TopicTitle",
    "VerifyingObserverIdentificationCodeSequence", "VerifyingObserverName", "VerifyingObserverSequence",
    "VerifyingOrganization", "VisitComments"
))
# Z attributes dicognito leaves as they are: kept with a zero-length value. (Its pseudonyms stand in for the other
# Z attributes: PatientName, PatientID, ReferringPhysicianName, AccessionNumber, StudyID, dates and times.)
EMPTY = ("PatientSex", "PatientBirthDate")  # a shifted birth date would still give the age within about two years
_DATE = {"DA": re.compile(r"^\d{8}$"), "DT": re.compile(r"^\d{8,14}(\.\d{1,6})?([+-]\d{4})?$"),
         "TM": re.compile(r"^\d{2,6}(\.\d{1,6})?$")}


class DeidentificationError(Exception):
    """The file could not be de-identified, so it is not stored."""


class StudyDeidentifier:
    """One per study: the same patient, study and series get the same pseudonyms and UIDs within it."""

    def __init__(self) -> None:
        self._anonymizer = Anonymizer()  # a random seed, kept nowhere: the mapping cannot be reversed

    def dataset(self, ds: Dataset) -> Dataset:
        """De-identify ``ds`` in place (and return it)."""
        ds.walk(_blank_malformed_dates)  # dicognito's date shift raises on values that are not dates
        self._anonymizer.anonymize(ds)
        ds.remove_private_tags()  # recursive: private attributes in sequences go too
        ds.walk(_remove_listed)
        ds.walk(_blank_times)
        # curves (50xx) and overlays (60xx): drawn annotations may name the patient
        for tag in [e.tag for e in ds if 0x5000 <= e.tag.group <= 0x50FF or 0x6000 <= e.tag.group <= 0x60FF]:
            del ds[tag]
        for keyword in EMPTY:
            if keyword in ds:
                ds[keyword].value = ""
        burned = str(ds.get("BurnedInAnnotation", "")).upper() == "YES"
        # With text known to be burned into the pixels the identity is not removed, and the header must say so.
        ds.PatientIdentityRemoved = "NO" if burned else "YES"
        ds.DeidentificationMethod = [METHOD, f"dicognito {dicognito.__version__}"]
        ds.DeidentificationMethodCodeSequence = Sequence([_code(value, meaning) for value, meaning in CODES])
        return ds

    def file(self, source: Path, dest: Path) -> None:
        """Write a de-identified copy of the DICOM file ``source`` to ``dest``; DeidentificationError if impossible."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom warns about each malformed value; dealt with here
                ds = pydicom.dcmread(source, force=True)
                self.dataset(ds)
                _complete_file_meta(ds)
                ds.save_as(dest, enforce_file_format=True)
        except Exception as exc:  # pydicom and dicognito raise many kinds on malformed headers
            dest.unlink(missing_ok=True)
            raise DeidentificationError(f"cannot de-identify this DICOM file ({type(exc).__name__})") from None


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def _blank_malformed_dates(_ds: Dataset, elem: DataElement) -> None:
    pattern = _DATE.get(elem.VR)
    if pattern is None or not elem.value:
        return
    values = elem.value if isinstance(elem.value, pydicom.multival.MultiValue) else [elem.value]
    # ACR-NEMA's YYYY.MM.DD and HH:MM:SS are accepted, as dicognito does
    if not all(isinstance(v, str) and pattern.match(v.replace(".", "") if elem.VR == "DA" else v.replace(":", ""))
               for v in values):
        elem.value = ""


def _blank_times(_ds: Dataset, elem: DataElement) -> None:
    """Every time of day (TM) is emptied (Basic Profile: Z): dicognito's shift of a time with its date left it
    unchanged in 7 of 200 trials, and the time of an examination helps to find it. Date-times (DT) keep their
    shifted value, whose date part always moves."""
    if elem.VR == "TM" and elem.value:
        elem.value = ""


def _remove_listed(ds: Dataset, elem: DataElement) -> None:
    if elem.keyword in REMOVE:
        del ds[elem.tag]


def _complete_file_meta(ds: Dataset) -> None:
    """A preamble-less upload has no file meta: the stored copy gets one (Part 10 file) from its own header."""
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for keyword, source in (("MediaStorageSOPClassUID", "SOPClassUID"),
                            ("MediaStorageSOPInstanceUID", "SOPInstanceUID")):
        if source in ds:
            setattr(meta, keyword, ds[source].value)
    meta.pop("SourceApplicationEntityTitle", None)
    ds.file_meta = meta

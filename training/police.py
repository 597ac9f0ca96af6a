"""Reference data of the police.uk street-level crime files.

The strings are exactly those police.uk publishes, so generated data and
downloaded data are read the same way.
"""

from __future__ import annotations

from typing import Final

# Header of a police.uk street-level crime CSV ("<YYYY-MM>-<force>-street.csv").
STREET_COLUMNS: Final[tuple[str, ...]] = (
    "Crime ID",
    "Month",
    "Reported by",
    "Falls within",
    "Longitude",
    "Latitude",
    "Location",
    "LSOA code",
    "LSOA name",
    "Crime type",
    "Last outcome category",
    "Context",
)

# The 43 territorial police forces of England and Wales plus the British
# Transport Police, as police.uk names them, with the slug of their file names.
FORCES: Final[dict[str, str]] = {
    "Avon and Somerset Constabulary": "avon-and-somerset",
    "Bedfordshire Police": "bedfordshire",
    "British Transport Police": "btp",
    "Cambridgeshire Constabulary": "cambridgeshire",
    "Cheshire Constabulary": "cheshire",
    "City of London Police": "city-of-london",
    "Cleveland Police": "cleveland",
    "Cumbria Constabulary": "cumbria",
    "Derbyshire Constabulary": "derbyshire",
    "Devon & Cornwall Police": "devon-and-cornwall",
    "Dorset Police": "dorset",
    "Durham Constabulary": "durham",
    "Dyfed-Powys Police": "dyfed-powys",
    "Essex Police": "essex",
    "Gloucestershire Constabulary": "gloucestershire",
    "Greater Manchester Police": "greater-manchester",
    "Gwent Police": "gwent",
    "Hampshire Constabulary": "hampshire",
    "Hertfordshire Constabulary": "hertfordshire",
    "Humberside Police": "humberside",
    "Kent Police": "kent",
    "Lancashire Constabulary": "lancashire",
    "Leicestershire Police": "leicestershire",
    "Lincolnshire Police": "lincolnshire",
    "Merseyside Police": "merseyside",
    "Metropolitan Police Service": "metropolitan",
    "Norfolk Constabulary": "norfolk",
    "North Wales Police": "north-wales",
    "North Yorkshire Police": "north-yorkshire",
    "Northamptonshire Police": "northamptonshire",
    "Northumbria Police": "northumbria",
    "Nottinghamshire Police": "nottinghamshire",
    "South Wales Police": "south-wales",
    "South Yorkshire Police": "south-yorkshire",
    "Staffordshire Police": "staffordshire",
    "Suffolk Constabulary": "suffolk",
    "Surrey Police": "surrey",
    "Sussex Police": "sussex",
    "Thames Valley Police": "thames-valley",
    "Warwickshire Police": "warwickshire",
    "West Mercia Police": "west-mercia",
    "West Midlands Police": "west-midlands",
    "West Yorkshire Police": "west-yorkshire",
    "Wiltshire Police": "wiltshire",
}

CRIME_TYPES: Final[tuple[str, ...]] = (
    "Anti-social behaviour",
    "Bicycle theft",
    "Burglary",
    "Criminal damage and arson",
    "Drugs",
    "Other crime",
    "Other theft",
    "Possession of weapons",
    "Public order",
    "Robbery",
    "Shoplifting",
    "Theft from the person",
    "Vehicle crime",
    "Violence and sexual offences",
)

# Anti-social behaviour incidents carry no outcome on police.uk.
CRIME_TYPES_WITHOUT_OUTCOME: Final[frozenset[str]] = frozenset({"Anti-social behaviour"})

# The target. "Caught" means a suspect was identified and formally dealt with:
# charged (whatever the court later decided), cautioned, fined, given a penalty
# notice or a community resolution. Outcomes that say nobody was identified or
# that no action followed are "not caught". Outcomes that are still open say
# nothing yet and are dropped (and counted) rather than guessed.
CAUGHT_OUTCOMES: Final[frozenset[str]] = frozenset(
    {
        "Awaiting court outcome",
        "Court result unavailable",
        "Court case unable to proceed",
        "Defendant found not guilty",
        "Defendant sent to Crown Court",
        "Offender given a caution",
        "Offender given a drugs possession warning",
        "Offender given absolute discharge",
        "Offender given community sentence",
        "Offender given conditional discharge",
        "Offender given penalty notice",
        "Offender given suspended prison sentence",
        "Offender fined",
        "Offender ordered to pay compensation",
        "Offender otherwise dealt with",
        "Offender sent to prison",
        "Offender deprived of property",
        "Local resolution",
        "Suspect charged as part of another case",
    }
)

NOT_CAUGHT_OUTCOMES: Final[frozenset[str]] = frozenset(
    {
        "Investigation complete; no suspect identified",
        "Unable to prosecute suspect",
        "Formal action is not in the public interest",
        "Further action is not in the public interest",
        "Further investigation is not in the public interest",
        "Action to be taken by another organisation",
    }
)

OPEN_OUTCOMES: Final[frozenset[str]] = frozenset(
    {
        "Under investigation",
        "Status update unavailable",
    }
)

# Places police.uk uses in "On or near ..." besides street names.
PLACES: Final[tuple[str, ...]] = (
    "Supermarket",
    "Shopping Area",
    "Parking Area",
    "Petrol Station",
    "Nightclub",
    "Sports/Recreation Area",
    "Further/Higher Educational Building",
    "Hospital",
    "Bus/Coach Station",
    "Theatre/Concert Hall",
    "Police Station",
    "Park/Open Space",
    "Pedestrian Subway",
)

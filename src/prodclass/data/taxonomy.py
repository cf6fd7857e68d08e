"""The 27 Rakuten France product-type codes and their names.

Rakuten never published names; these are the community labels shipped with the challenge data
(``category_names.csv``); a data test checks the two agree.
"""

from __future__ import annotations

from typing import NamedTuple


class Category(NamedTuple):
    code: int
    name_fr: str
    name_en: str


CATEGORIES: tuple[Category, ...] = (
    Category(10, "Livres occasion", "Books"),
    Category(40, "Jeux consoles neuf", "PC and console video games"),
    Category(50, "Accessoires gaming", "Video game accessories"),
    Category(60, "Consoles de jeux", "Video game consoles"),
    Category(1140, "Objets pop culture", "Geek merchandise and figurines"),
    Category(1160, "Cartes de jeux", "Collectible cards"),
    Category(1180, "Jeux de rôle et figurines", "Collectible board-game figurines"),
    Category(1280, "Jouets enfant", "Toys, plush toys and dolls"),
    Category(1281, "Jeux enfant", "Board and card games"),
    Category(1300, "Modélisme", "Toy cars and models"),
    Category(1301, "Chaussettes enfant", "Baby/child accessories and game furniture"),
    Category(1302, "Jeux de plein air", "Outdoor games"),
    Category(1320, "Puériculture", "Women’s bags and early-childhood accessories"),
    Category(1560, "Mobilier", "Home furniture, decoration and storage"),
    Category(1920, "Linge de maison", "Household linen"),
    Category(1940, "Épicerie", "Food and groceries"),
    Category(2060, "Décoration", "Home lamps and decorative accessories"),
    Category(2220, "Animalerie", "Pet accessories"),
    Category(2280, "Journaux et revues occasion", "Magazines"),
    Category(2403, "Lots livres et magazines", "Books and comics"),
    Category(2462, "Jeux vidéo occasion", "Video-game consoles and games"),
    Category(2522, "Fournitures papeterie", "Stationery and office storage"),
    Category(2582, "Mobilier de jardin", "Outdoor furniture and accessories"),
    Category(2583, "Piscine et accessoires", "Swimming-pool accessories"),
    Category(2585, "Outillage de jardin", "Tools and gardening accessories"),
    Category(2705, "Livres neufs", "Comics and books"),
    Category(2905, "Jeux PC", "Downloadable games"),
)

CODES: tuple[int, ...] = tuple(c.code for c in CATEGORIES)
_BY_CODE = {c.code: c for c in CATEGORIES}


def is_known(code: int) -> bool:
    return code in _BY_CODE


def category(code: int) -> Category:
    """The category of a code; KeyError names the unknown code."""
    try:
        return _BY_CODE[int(code)]
    except KeyError:
        raise KeyError(f"unknown prdtypecode {code}") from None


def name(code: int, lang: str = "fr") -> str:
    c = category(code)
    return c.name_fr if lang == "fr" else c.name_en

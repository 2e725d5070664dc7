"""Surface displacement of elastic half-space sources and its projection on the radar line of sight.

Coordinates are local East, North, Up in metres; depths are positive downwards. All functions
broadcast over their arguments (one source per sample: give parameters of shape (n, 1, 1) and
coordinates of shape (H, W)).

- :func:`mogi`: point pressure source (Mogi 1958), the classical model of a magma chamber;
- :func:`okada85`: finite rectangular dislocation (Okada 1985), faults and dikes;
- :func:`los_unit_vector` / :func:`los_phase`: projection on the radar line of sight.

References
----------
Mogi, K. (1958). Relations between the eruptions of various volcanoes and the deformations of
the ground surfaces around them. Bull. Earthq. Res. Inst. 36, 99-134.
Okada, Y. (1985). Surface deformation due to shear and tensile faults in a half-space. Bull.
Seismol. Soc. Am. 75(4), 1135-1154.
Hanssen, R. F. (2001). Radar Interferometry: Data Interpretation and Error Analysis. Kluwer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

C_BAND_WAVELENGTH_M = 0.0555  # Sentinel-1 (5.405 GHz)


@dataclass
class Displacement:
    """Surface displacement (metres) East, North, Up; arrays of a common broadcast shape."""

    east: np.ndarray
    north: np.ndarray
    up: np.ndarray


def mogi(east, north, depth, dvolume, nu: float = 0.25) -> Displacement:
    """Surface displacement of a Mogi point source at (0, 0, -depth).

    ``u = (1 - nu) dV / pi * (x, y, d) / R**3`` with ``R**2 = x**2 + y**2 + d**2`` (Mogi 1958 in
    the volume-change form of e.g. Segall 2010, eq. 7.14). For nu = 0.25 the peak uplift is
    ``3 dV / (4 pi d**2)``.

    Parameters
    ----------
    east, north : coordinates relative to the source's surface projection (m).
    depth : source depth (m), > 0; point-source accuracy needs depth >> chamber radius.
    dvolume : volume change (m^3), positive for inflation.
    nu : Poisson's ratio (0.25 for a Poisson solid).
    """
    east, north, depth = (np.asarray(a, dtype=np.float64) for a in (east, north, depth))
    c = (1.0 - nu) * np.asarray(dvolume, dtype=np.float64) / np.pi
    r3 = (east**2 + north**2 + depth**2) ** 1.5
    return Displacement(east=c * east / r3, north=c * north / r3, up=c * depth / r3 + 0 * east)


def _okada_corner(xi, eta, q, cd, sd, a):
    """Okada (1985) eqs. 25-30 at one corner: (ss, ds, tf) x (x, y, z) before the 1/2pi factors.

    Singular terms follow Okada (1992, sec. 5): log(R + eta) -> -log(R - eta) and
    1/(R (R + eta)) -> 0 where R + eta = 0, the arctangent term -> 0 where q = 0, I5 -> 0 where
    xi = 0. ``a`` is mu / (lambda + mu) = 1 - 2 nu.
    """
    tiny = 1e-12
    r = np.sqrt(xi**2 + eta**2 + q**2)
    yb, db = eta * cd + q * sd, eta * sd - q * cd
    re, rx, rd = r + eta, r + xi, r + db
    scale = np.maximum(r, 1.0) * tiny
    ok_e, ok_x, ok_d = re > scale, rx > scale, rd > scale
    ln_re = np.where(ok_e, np.log(np.where(ok_e, re, 1.0)), -np.log(np.where(ok_e, 1.0, r - eta)))
    inv_rre = np.where(ok_e, 1.0 / (r * np.where(ok_e, re, 1.0)), 0.0)
    inv_re = np.where(ok_e, 1.0 / np.where(ok_e, re, 1.0), 0.0)
    inv_rrx = np.where(ok_x, 1.0 / (r * np.where(ok_x, rx, 1.0)), 0.0)
    inv_rd = np.where(ok_d, 1.0 / np.where(ok_d, rd, 1.0), 0.0)
    qnz = q != 0
    theta = np.where(qnz, np.arctan(xi * eta / np.where(qnz, q * r, 1.0)), 0.0)
    vertical = np.abs(cd) < 1e-9
    cds = np.where(vertical, 1.0, cd)  # safe divisor; the vertical branch does not use it
    x = np.sqrt(xi**2 + q**2)
    den = xi * (r + x) * cds
    i5_reg = np.where(
        xi != 0,
        a
        * 2.0
        / cds
        * np.arctan((eta * (x + q * cd) + x * (r + x) * sd) / np.where(xi != 0, den, 1.0)),
        0.0,
    )
    i4_reg = a / cds * (np.log(np.where(ok_d, rd, 1.0)) - sd * ln_re)
    i3_reg = a * (yb * inv_rd / cds - ln_re) + sd / cds * i4_reg
    i1_reg = -a * xi * inv_rd / cds - sd / cds * i5_reg
    i1 = np.where(vertical, -a / 2.0 * xi * q * inv_rd**2, i1_reg)
    i3 = np.where(vertical, a / 2.0 * (eta * inv_rd + yb * q * inv_rd**2 - ln_re), i3_reg)
    i4 = np.where(vertical, -a * q * inv_rd, i4_reg)
    i5 = np.where(vertical, -a * xi * sd * inv_rd, i5_reg)
    i2 = -a * ln_re - i3
    xqr = xi * q * inv_rre
    return (
        (
            xqr + theta + i1 * sd,
            yb * q * inv_rre + q * cd * inv_re + i2 * sd,
            db * q * inv_rre + q * sd * inv_re + i4 * sd,
        ),
        (
            q / r - i3 * sd * cd,
            yb * q * inv_rrx + cd * theta - i1 * sd * cd,
            db * q * inv_rrx + sd * theta - i5 * sd * cd,
        ),
        (
            q**2 * inv_rre - i3 * sd**2,
            -db * q * inv_rrx - sd * (xqr - theta) - i1 * sd**2,
            yb * q * inv_rrx + cd * (xqr - theta) - i5 * sd**2,
        ),
    )


def okada85_local(x, y, d, dip_rad, length, width, u1, u2, u3, nu: float = 0.25):
    """Okada (1985) surface displacement (ux, uy, uz) in Okada's own frame.

    The fault's lower edge runs from (0, 0, -d) to (length, 0, -d) along x (strike) and the fault
    extends ``width`` up-dip towards +y; ``u1``, ``u2``, ``u3`` are strike-slip, dip-slip and
    tensile dislocations. Chinnery's notation ``f(xi, eta)|| = f(x, p) - f(x, p - W)
    - f(x - L, p) + f(x - L, p - W)`` with ``p = y cos(dip) + d sin(dip)``,
    ``q = y sin(dip) - d cos(dip)``.
    """
    cd, sd = np.cos(dip_rad), np.sin(dip_rad)
    x, y, d = (np.asarray(v, dtype=np.float64) for v in (x, y, d))
    p, q = y * cd + d * sd, y * sd - d * cd
    a = 1.0 - 2.0 * nu
    total = None
    with np.errstate(divide="ignore", invalid="ignore"):
        for xi, eta, sign in (
            (x, p, 1.0),
            (x, p - width, -1.0),
            (x - length, p, -1.0),
            (x - length, p - width, 1.0),
        ):
            part = _okada_corner(xi, eta, q, cd, sd, a)
            if total is None:
                total = [[sign * c for c in mode] for mode in part]
            else:
                total = [
                    [t + sign * c for t, c in zip(tm, pm, strict=True)]
                    for tm, pm in zip(total, part, strict=True)
                ]
    ss, ds, tf = total
    k = 1.0 / (2.0 * np.pi)
    return tuple(-u1 * k * ss[i] - u2 * k * ds[i] + u3 * k * tf[i] for i in range(3))


def okada85(
    east,
    north,
    depth,
    strike_deg,
    dip_deg,
    length,
    width,
    rake_deg,
    slip,
    opening=0.0,
    nu: float = 0.25,
) -> Displacement:
    """Surface displacement of a rectangular dislocation in an elastic half-space (Okada 1985).

    Parameters
    ----------
    east, north : coordinates (m) relative to the surface projection of the fault centroid.
    depth : centroid depth (m); the top edge, ``depth - width/2 sin(dip)``, must be >= 0.
    strike_deg : strike, clockwise from North (0-360), the fault dipping to its right.
    dip_deg : dip (0 < dip <= 90).
    length, width : along-strike and down-dip dimensions (m).
    rake_deg : slip direction on the fault plane (0 left-lateral, 90 thrust, -90 normal,
        180 right-lateral).
    slip, opening : dislocation amplitudes (m); opening > 0 for a dike or a sill.
    nu : Poisson's ratio.

    Notes
    -----
    The geographic-to-Okada change of frame follows Beauducel's ``okada85`` convention: the
    reference point is the centroid. Verified against Table 2 of Okada (1985) in the tests.
    """
    st, dp, rk = (
        np.deg2rad(np.asarray(v, dtype=np.float64)) for v in (strike_deg, dip_deg, rake_deg)
    )
    east, north = np.asarray(east, dtype=np.float64), np.asarray(north, dtype=np.float64)
    d = depth + np.sin(dp) * width / 2.0
    ec = east + np.cos(st) * np.cos(dp) * width / 2.0
    nc = north - np.sin(st) * np.cos(dp) * width / 2.0
    x = np.cos(st) * nc + np.sin(st) * ec + length / 2.0
    y = np.sin(st) * nc - np.cos(st) * ec + np.cos(dp) * width
    ux, uy, uz = okada85_local(
        x, y, d, dp, length, width, np.cos(rk) * slip, np.sin(rk) * slip, opening, nu
    )
    return Displacement(
        east=np.sin(st) * ux - np.cos(st) * uy, north=np.cos(st) * ux + np.sin(st) * uy, up=uz
    )


def los_unit_vector(incidence_deg, heading_deg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(east, north, up) components of the unit vector from the ground to a right-looking radar.

    ``s = (-sin(theta) cos(alpha), sin(theta) sin(alpha), cos(theta))`` with incidence ``theta``
    and heading ``alpha`` (flight direction, clockwise from North; Sentinel-1 about -10 deg
    ascending, -170 deg descending).
    """
    th, al = np.deg2rad(incidence_deg), np.deg2rad(heading_deg)
    return -np.sin(th) * np.cos(al), np.sin(th) * np.sin(al), np.cos(th)


def los_displacement(u: Displacement, incidence_deg, heading_deg) -> np.ndarray:
    """Displacement towards the satellite, ``d_LOS = u . s`` (m); uplift gives d_LOS > 0."""
    se, sn, su = los_unit_vector(incidence_deg, heading_deg)
    return u.east * se + u.north * sn + u.up * su


def los_phase(
    u: Displacement, incidence_deg, heading_deg, wavelength_m: float = C_BAND_WAVELENGTH_M
) -> np.ndarray:
    """Interferometric phase (rad) of a displacement: ``phi = -4 pi / lambda * d_LOS``.

    A motion towards the satellite shortens the two-way path and gives a negative phase in this
    convention (Hanssen 2001, eq. 2.4.23 up to the sign convention of the processor).
    """
    return -4.0 * np.pi / wavelength_m * los_displacement(u, incidence_deg, heading_deg)

//! DICOM date (DA) and time (TM) values for the current moment, in UTC.

use std::time::{SystemTime, UNIX_EPOCH};

/// A moment as DICOM writes it: `YYYYMMDD` and `HHMMSS.FFFFFF`, in UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DicomDateTime {
    /// The date, `YYYYMMDD`.
    pub date: String,
    /// The time, `HHMMSS.FFFFFF`.
    pub time: String,
}

/// The current moment in UTC.
pub(crate) fn now_utc() -> DicomDateTime {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    from_unix(elapsed.as_secs(), elapsed.subsec_micros())
}

/// The DICOM date and time of `seconds` (plus `micros`) after 1970-01-01T00:00:00Z.
fn from_unix(seconds: u64, micros: u32) -> DicomDateTime {
    let days = seconds / 86_400;
    let of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    DicomDateTime {
        date: format!("{year:04}{month:02}{day:02}"),
        time: format!(
            "{:02}{:02}{:02}.{micros:06}",
            of_day / 3600,
            of_day % 3600 / 60,
            of_day % 60
        ),
    }
}

/// Year, month and day of the `days`-th day after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_moments_are_written_as_dicom_da_and_tm() {
        assert_eq!(
            from_unix(0, 0),
            DicomDateTime {
                date: "19700101".into(),
                time: "000000.000000".into()
            }
        );
        // 2024-02-29T23:59:58.5Z, a leap day.
        assert_eq!(
            from_unix(1_709_251_198, 500_000),
            DicomDateTime {
                date: "20240229".into(),
                time: "235958.500000".into()
            }
        );
        // 2000-03-01T12:34:56Z, after the century leap day.
        assert_eq!(from_unix(951_914_096, 0).date, "20000301");
        assert_eq!(from_unix(951_914_096, 0).time, "123456.000000");
    }
}

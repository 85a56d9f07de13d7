//! `date_trunc` over UTC timestamps at the speed of timezone-less ones.
//!
//! Event times are Iceberg `timestamptz` columns, read as
//! `Timestamp(_, Some("UTC"))`. DataFusion's `date_trunc` truncates such
//! values through a per-value timezone conversion, while timezone-less
//! values take an arithmetic fast path (hour and day are exact in UTC). This
//! wrapper replaces the built-in function under the same name: for UTC
//! arrays it drops the timezone (no copy), calls the built-in, and puts the
//! timezone back; every other input goes to the built-in unchanged, so the
//! results are the built-in's in every case.

use std::any::Any;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, Field, FieldRef, TimeUnit};
use datafusion::common::Result;
use datafusion::functions::datetime::date_trunc::DateTruncFunc;
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature,
};

/// Timezone names that mean UTC.
const UTC_NAMES: &[&str] = &["UTC", "utc", "+00:00", "Z", "+00", "Etc/UTC"];

/// The built-in `date_trunc` with a fast path for UTC timestamp arrays.
#[derive(Debug, PartialEq, Eq, Hash, Default)]
pub struct UtcDateTrunc {
    inner: DateTruncFunc,
}

/// `array` with its timezone replaced by `tz` (the values are unchanged).
fn with_timezone(array: &ArrayRef, tz: Option<Arc<str>>) -> ArrayRef {
    match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => {
            Arc::new(array.as_primitive::<TimestampSecondType>().clone().with_timezone_opt(tz))
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            Arc::new(array.as_primitive::<TimestampMillisecondType>().clone().with_timezone_opt(tz))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Arc::new(array.as_primitive::<TimestampMicrosecondType>().clone().with_timezone_opt(tz))
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            Arc::new(array.as_primitive::<TimestampNanosecondType>().clone().with_timezone_opt(tz))
        }
        _ => array.clone(),
    }
}

/// The UTC timezone of a timestamp type, if it has one.
fn utc_of(data_type: &DataType) -> Option<Arc<str>> {
    match data_type {
        DataType::Timestamp(_, Some(tz)) if UTC_NAMES.contains(&tz.as_ref()) => Some(tz.clone()),
        _ => None,
    }
}

/// `field` with a timezone-less timestamp type.
fn without_timezone(field: &FieldRef) -> FieldRef {
    match field.data_type() {
        DataType::Timestamp(unit, Some(_)) => {
            Arc::new(Field::new(field.name(), DataType::Timestamp(*unit, None), field.is_nullable()))
        }
        _ => field.clone(),
    }
}

impl ScalarUDFImpl for UtcDateTrunc {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let utc = match args.args.get(1) {
            Some(ColumnarValue::Array(array)) => utc_of(array.data_type()),
            _ => None,
        };
        let Some(tz) = utc else {
            return self.inner.invoke_with_args(args);
        };
        if let Some(ColumnarValue::Array(array)) = args.args.get_mut(1) {
            *array = with_timezone(array, None);
        }
        if let Some(field) = args.arg_fields.get_mut(1) {
            *field = without_timezone(field);
        }
        args.return_field = without_timezone(&args.return_field);
        match self.inner.invoke_with_args(args)? {
            ColumnarValue::Array(result) => Ok(ColumnarValue::Array(with_timezone(&result, Some(tz)))),
            scalar => Ok(scalar),
        }
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn output_ordering(&self, input: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(input)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::TimestampMillisecondArray;
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::logical_expr::ScalarUDF;
    use datafusion::prelude::SessionContext;

    use super::*;

    /// Runs `sql` over a table `t(ts)` of UTC millisecond times, with or without the wrapper.
    async fn run(sql: &str, wrapped: bool) -> Vec<RecordBatch> {
        // Times from 1960 over ~78 years, before and after the epoch, with millisecond parts.
        let values: Vec<Option<i64>> = (0..2_000)
            .map(|i: i64| if i % 97 == 0 { None } else { Some(-315_619_200_123 + i * 1_234_567_891) })
            .collect();
        let array = TimestampMillisecondArray::from(values).with_timezone("UTC");
        let batch = RecordBatch::try_from_iter([("ts", Arc::new(array) as ArrayRef)]).unwrap();
        let ctx = SessionContext::new();
        if wrapped {
            ctx.register_udf(ScalarUDF::new_from_impl(UtcDateTrunc::default()));
        }
        ctx.register_batch("t", batch).unwrap();
        ctx.sql(sql).await.unwrap().collect().await.unwrap()
    }

    #[tokio::test]
    async fn same_results_as_the_built_in_for_every_granularity() {
        for unit in ["second", "minute", "hour", "day", "week", "month", "quarter", "year"] {
            let sql =
                format!("SELECT ts, date_trunc('{unit}', ts) AS t, datetrunc('{unit}', ts) AS a FROM t ORDER BY ts");
            let (built_in, wrapped) = (run(&sql, false).await, run(&sql, true).await);
            assert_eq!(built_in, wrapped, "date_trunc('{unit}')");
            let schema = wrapped[0].schema();
            assert_eq!(
                schema.field(1).data_type(),
                &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                "the result keeps the timezone"
            );
        }
    }
}

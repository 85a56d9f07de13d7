//! [`AlarmSlot`]: what an object knows of its own alarm, so that asking for
//! a wake-up no earlier than one already set writes nothing.

use events_runtime::context::ObjectStorage;
use events_runtime::{ObjectResult, Timestamp};

/// The earliest time the object's alarm is set for, as far as this instance knows.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AlarmSlot(Option<i64>);

impl AlarmSlot {
    /// The alarm as stored (read when the instance loads).
    pub(crate) async fn load<S: ObjectStorage>(storage: &S) -> ObjectResult<Self> {
        Ok(AlarmSlot(storage.get_alarm().await?.map(|t| t.as_millis())))
    }

    /// Sets the alarm to `at` unless it already fires no later.
    pub(crate) async fn arm<S: ObjectStorage>(&mut self, storage: &S, at: i64) -> ObjectResult<()> {
        if self.0.is_none_or(|current| at < current) {
            storage.set_alarm(Timestamp(at)).await?;
            self.0 = Some(at);
        }
        Ok(())
    }

    /// The alarm fired (hosts clear it before they run the handler).
    pub(crate) fn fired(&mut self) {
        self.0 = None;
    }
}

//! Processor API processors inside a DSL job.

use rill_core::processor::{ProcessError, Processor, ProcessorContext, Record};

/// A Processor API processor in a DSL job: it gets values as bytes (`serdes::hop`), never
/// the DSL's in-memory values.
pub(crate) struct BytesIn(pub(crate) Box<dyn Processor>);

impl Processor for BytesIn {
    fn init(&mut self, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        self.0.init(ctx)
    }

    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        mut r: Record,
    ) -> Result<(), ProcessError> {
        r.materialize()?;
        self.0.process(ctx, r)
    }

    fn flush(&mut self, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        self.0.flush(ctx)
    }

    fn close(&mut self) {
        self.0.close()
    }
}

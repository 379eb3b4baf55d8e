//! Plans cross the wire between client, scheduler and executors as protobuf. DataFusion's
//! and Ballista's codecs know the built-in tables and operators; these carry sluice's own:
//! `resolve_identities` tables and operators, and the dedup operator.

use std::sync::Arc;

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::{internal_err, DataFusionError, Result, TableReference};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::execution::context::SessionState;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::bytes::{
    logical_plan_from_bytes_with_extension_codec, logical_plan_to_bytes_with_extension_codec,
};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use serde::{Deserialize, Serialize};

use crate::engine::first_row::FirstRowPerKeyExec;
use crate::functions::identity::{
    identity_exec, identity_spec, identity_table, IdentityExec, IdentityForestExec, IdentitySpec,
    InputPlans,
};
use crate::sources::listed::ListedTable;
use crate::sources::manifest::{register_listed_view, ListedFiles};

// Tags in front of sluice's own messages; anything else is Ballista's or DataFusion's.
const IDENTITY_TABLE: &[u8] = b"sluice.identity_table\0";
const IDENTITY_EXEC: &[u8] = b"sluice.identity_exec\0";
const IDENTITY_FOREST: &[u8] = b"sluice.identity_forest\0";
const FIRST_ROW: &[u8] = b"sluice.first_row\0";
const LISTED_TABLE: &[u8] = b"sluice.listed_table\0";

/// A table read through a listed view: the view's files, and the table itself as the plan
/// of its scan (DataFusion's own encoding of the listing table).
#[derive(Serialize, Deserialize)]
struct WireListed {
    host: String,
    files: ListedFiles,
    scan_plan: String,
}

/// A `resolve_identities` spec on the wire: names, and the resolved input plans as
/// protobuf bytes (base64).
#[derive(Serialize, Deserialize)]
struct WireSpec {
    edges: String,
    left: String,
    right: String,
    previous: Option<String>,
    edges_plan: Option<String>,
    previous_plan: Option<String>,
    projection: Option<Vec<usize>>,
}

#[derive(Serialize, Deserialize)]
struct WireFirstRow {
    /// (name, index) of each key column of the input.
    keys: Vec<(String, usize)>,
    rn_name: String,
    rn_nullable: bool,
}

fn tagged(tag: &[u8], json: &impl Serialize, buf: &mut Vec<u8>) -> Result<()> {
    buf.extend_from_slice(tag);
    serde_json::to_writer(buf, json).map_err(|e| DataFusionError::Internal(e.to_string()))
}

fn untag<'a, T: Deserialize<'a>>(tag: &[u8], buf: &'a [u8]) -> Option<Result<T>> {
    let body = buf.strip_prefix(tag)?;
    Some(serde_json::from_slice(body).map_err(|e| DataFusionError::Internal(e.to_string())))
}

fn encode_spec(
    spec: &IdentitySpec,
    projection: Option<&[usize]>,
    codec: &SluiceLogicalCodec,
) -> Result<WireSpec> {
    let plan_text = |plan: &LogicalPlan| -> Result<String> {
        Ok(BASE64.encode(logical_plan_to_bytes_with_extension_codec(plan, codec)?))
    };
    let plans = spec.plans.as_ref();
    Ok(WireSpec {
        edges: spec.edges.clone(),
        left: spec.left.clone(),
        right: spec.right.clone(),
        previous: spec.previous.clone(),
        edges_plan: plans.map(|p| plan_text(&p.edges)).transpose()?,
        previous_plan: plans
            .and_then(|p| p.previous.as_ref())
            .map(plan_text)
            .transpose()?,
        projection: projection.map(<[usize]>::to_vec),
    })
}

fn decode_spec(
    wire: WireSpec,
    ctx: &TaskContext,
    codec: &SluiceLogicalCodec,
) -> Result<IdentitySpec> {
    let plan = |text: &str| -> Result<LogicalPlan> {
        let bytes = BASE64
            .decode(text)
            .map_err(|e| DataFusionError::Internal(e.to_string()))?;
        logical_plan_from_bytes_with_extension_codec(&bytes, ctx, codec)
    };
    let plans = match &wire.edges_plan {
        Some(edges) => Some(InputPlans {
            edges: plan(edges)?,
            previous: wire.previous_plan.as_deref().map(plan).transpose()?,
        }),
        None => None,
    };
    Ok(IdentitySpec {
        edges: wire.edges,
        left: wire.left,
        right: wire.right,
        previous: wire.previous,
        plans,
    })
}

/// Logical plans from the client to the scheduler.
#[derive(Debug, Default)]
pub struct SluiceLogicalCodec {
    inner: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for SluiceLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        if let Some(wire) = untag::<WireListed>(LISTED_TABLE, buf) {
            let wire = wire?;
            // This process (the scheduler) lists the same files as the client's view.
            register_listed_view(ctx.runtime_env().as_ref(), &wire.host, &wire.files)?;
            let bytes = BASE64
                .decode(&wire.scan_plan)
                .map_err(|e| DataFusionError::Internal(e.to_string()))?;
            let LogicalPlan::TableScan(scan) =
                logical_plan_from_bytes_with_extension_codec(&bytes, ctx, self)?
            else {
                return internal_err!("a listed table's scan plan is not a table scan");
            };
            return Ok(Arc::new(ListedTable {
                inner: datafusion::datasource::source_as_provider(&scan.source)?,
                host: wire.host,
                files: wire.files,
            }));
        }
        match untag::<WireSpec>(IDENTITY_TABLE, buf) {
            Some(wire) => Ok(identity_table(decode_spec(wire?, ctx, self)?)),
            None => self
                .inner
                .try_decode_table_provider(buf, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some(listed) = node.downcast_ref::<ListedTable>() {
            let scan = datafusion::logical_expr::LogicalPlanBuilder::scan(
                table_ref.clone(),
                datafusion::datasource::provider_as_source(listed.inner.clone()),
                None,
            )?
            .build()?;
            let wire = WireListed {
                host: listed.host.clone(),
                files: listed.files.clone(),
                scan_plan: BASE64.encode(logical_plan_to_bytes_with_extension_codec(&scan, self)?),
            };
            return tagged(LISTED_TABLE, &wire, buf);
        }
        match identity_spec(node.as_ref()) {
            Some(spec) => tagged(IDENTITY_TABLE, &encode_spec(spec, None, self)?, buf),
            None => self.inner.try_encode_table_provider(table_ref, node, buf),
        }
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.inner.try_encode_file_format(buf, node)
    }
}

/// Physical plans from the scheduler to the executors. `state` is the receiving role's own
/// session: a `resolve_identities` operator reads its inputs through it.
#[derive(Debug)]
pub struct SluicePhysicalCodec {
    inner: BallistaPhysicalExtensionCodec,
    logical: SluiceLogicalCodec,
    state: SessionState,
}

impl SluicePhysicalCodec {
    pub fn new(state: SessionState) -> Self {
        SluicePhysicalCodec {
            inner: BallistaPhysicalExtensionCodec::default(),
            logical: SluiceLogicalCodec::default(),
            state,
        }
    }
}

impl PhysicalExtensionCodec for SluicePhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(wire) = untag::<WireSpec>(IDENTITY_EXEC, buf) {
            let wire = wire?;
            let projection = wire.projection.clone();
            let spec = decode_spec(wire, ctx, &self.logical)?;
            return identity_exec(
                spec,
                self.state.clone(),
                projection,
                inputs.first().cloned(),
            );
        }
        if buf == IDENTITY_FOREST {
            let [input] = inputs else {
                return internal_err!("IdentityForestExec needs one input");
            };
            return Ok(Arc::new(IdentityForestExec::new(input.clone())));
        }
        if let Some(wire) = untag::<WireFirstRow>(FIRST_ROW, buf) {
            let wire = wire?;
            let [input] = inputs else {
                return internal_err!("FirstRowPerKeyExec needs one input");
            };
            let keys = wire
                .keys
                .iter()
                .map(|(name, i)| Arc::new(Column::new(name, *i)) as Arc<dyn PhysicalExpr>)
                .collect();
            let mut fields = input.schema().fields().to_vec();
            fields.push(Arc::new(Field::new(
                wire.rn_name,
                DataType::UInt64,
                wire.rn_nullable,
            )));
            let schema = Arc::new(Schema::new(fields));
            return Ok(Arc::new(FirstRowPerKeyExec::new(
                input.clone(),
                keys,
                schema,
            )));
        }
        self.inner.try_decode(buf, inputs, ctx, proto_converter)
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(exec) = node.downcast_ref::<IdentityExec>() {
            let wire = encode_spec(exec.spec(), exec.projection(), &self.logical)?;
            return tagged(IDENTITY_EXEC, &wire, buf);
        }
        if node.downcast_ref::<IdentityForestExec>().is_some() {
            buf.extend_from_slice(IDENTITY_FOREST);
            return Ok(());
        }
        if let Some(exec) = node.downcast_ref::<FirstRowPerKeyExec>() {
            let keys = exec
                .keys()
                .iter()
                .map(|k| match k.downcast_ref::<Column>() {
                    Some(c) => Ok((c.name().to_string(), c.index())),
                    None => internal_err!("FirstRowPerKeyExec key {k} is not a column"),
                })
                .collect::<Result<Vec<_>>>()?;
            let schema = exec.schema();
            let Some(rn) = schema.fields().last() else {
                return internal_err!("FirstRowPerKeyExec without columns");
            };
            let wire = WireFirstRow {
                keys,
                rn_name: rn.name().clone(),
                rn_nullable: rn.is_nullable(),
            };
            return tagged(FIRST_ROW, &wire, buf);
        }
        self.inner.try_encode(node, buf, proto_converter)
    }
}
